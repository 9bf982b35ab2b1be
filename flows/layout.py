"""Where a run's files live, the demo input, the labels CSV, and the predictions file writes."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helios.config import PipelineConfig
from helios.errors import UsageError


@dataclass(frozen=True)
class RunLayout:
    run_dir: Path
    work_dir: Path  # holds the MLflow store, the LLM cache and the demo corpus

    @classmethod
    def of(cls, config: PipelineConfig) -> "RunLayout":
        run_dir = Path(config.out).resolve()
        return cls(run_dir, run_dir.parent)

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def predictions(self) -> Path:
        return self.run_dir / "predictions.parquet"


def resolve_input(config: PipelineConfig, layout: RunLayout) -> tuple[str, str | None]:
    """(input root, labels CSV); with no input, the demo corpus is generated once under the work directory."""
    if config.input is not None:
        if "://" not in config.input and not Path(config.input).is_dir():
            raise UsageError(f"input directory {config.input} does not exist: pass an existing directory to --input")
        return config.input, config.labels
    from helios.data.demo import write_demo

    demo = layout.work_dir / f"demo-{config.demo.kind}-{config.demo.n}-{config.demo.seed}"
    labels = demo / "labels.csv"
    if not labels.is_file():
        write_demo(config.demo.kind, config.demo.n, demo, config.demo.corrupt if config.demo.kind == "mnist" else (),
                   config.demo.seed)
    return str(demo / "files"), config.labels or str(labels)


def read_truth(labels_csv: str | None) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """(path -> label, path -> corruption) from a labels CSV with columns path,label[,corruption]."""
    if labels_csv is None:
        return None, None
    path = Path(labels_csv)
    if not path.is_file():
        raise UsageError(f"labels file {path} does not exist: pass a CSV with columns path,label to --labels")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"path", "label"} <= set(rows[0]):
        raise UsageError(f"labels file {path} has columns {list(rows[0])}: it needs path and label")
    truth = {r["path"]: r["label"] for r in rows}
    groups = {r["path"]: r["corruption"] for r in rows if r.get("corruption")}
    return truth, groups or None


def accuracy(frame: pd.DataFrame, column: str, truth: dict[str, str] | None) -> float | None:
    """Share of labelled ok rows whose ``column`` equals the true label (error rows count as wrong)."""
    if truth is None or column not in frame:
        return None
    known = frame[frame["path"].isin(truth.keys())]
    if known.empty:
        return None
    expected = known["path"].map(truth)
    return float(((known[column].astype(str) == expected) & (known["status"] == "ok")).mean())


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write Parquet atomically: temp file, fsync, rename."""
    tmp = path.with_suffix(".parquet.tmp")
    frame.to_parquet(tmp, index=False)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def write_json(data: dict, path: Path) -> Path:
    """Write JSON atomically: temp file, then rename (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def decodable_root(input_root: str, rels, dest: Path, max_bytes: int) -> str:
    """A local directory holding the files ``rels`` (paths relative to ``input_root``), for the stages that decode
    files themselves after the scan (prepare, optimize, refine, review).

    A local root is used as it is (``file://`` stripped). For an fsspec URL, just those files are copied under
    ``dest``, each once (a rerun reuses the copies); a file that cannot be read is left out, and the stage reading it
    treats it as unreadable, as it would a local one (the infer stage's error row says why).
    """
    from tasks.infer.source import is_remote, local_root, read_file

    if not is_remote(input_root):
        return str(local_root(input_root))
    dest = Path(dest).resolve()
    for rel in rels:
        target = (dest / rel).resolve()
        if not target.is_relative_to(dest) or target.exists():
            continue
        try:
            data = read_file(input_root, rel.encode("utf-8", "surrogateescape"), max_bytes)
        except (OSError, ValueError):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        part.write_bytes(data)
        os.replace(part, target)
    return str(dest)
