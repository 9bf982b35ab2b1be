"""What a run reads: the input root (the built-in demo when none is given), local copies of remote files for the
stages that decode files themselves, and evenly spread samples."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, TypeVar

import pandas as pd

from flows.config import PipelineConfig
from helios.catalog import RunCatalog
from helios.errors import UsageError
from helios.files import write_bytes

T = TypeVar("T")


def resolve_input(config: PipelineConfig, catalog: RunCatalog) -> tuple[str, str | None]:
    """(input root, labels CSV); with no input, the demo corpus is generated once under the work directory."""
    if config.input is not None:
        if "://" not in config.input and not Path(config.input).is_dir():
            raise UsageError(f"input directory {config.input} does not exist: pass an existing directory to --input")
        return config.input, config.labels
    from helios.data.demo import write_demo

    demo = catalog.demo_dir(config.demo.kind, config.demo.n, config.demo.seed)
    labels = demo / "labels.csv"
    if not labels.is_file():
        write_demo(config.demo.kind, config.demo.n, demo, config.demo.corrupt if config.demo.kind == "mnist" else (),
                   config.demo.seed)
    return str(demo / "files"), config.labels or str(labels)


def sample_paths(items: Sequence[T], n: int) -> list[T]:
    """Up to ``n`` items spread evenly over ``items`` (folders are often one class each)."""
    step = max(1, len(items) // max(n, 1))
    return list(items[::step][:n])


def manifest_sample(manifest_path: Path, n: int) -> list[str]:
    """Up to ``n`` non-empty files (relative paths) spread evenly over the scan's manifest."""
    manifest = pd.read_parquet(manifest_path, columns=["path", "size_bytes"])
    return sample_paths(manifest.loc[manifest["size_bytes"] > 0, "path"].tolist(), n)


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
        write_bytes(data, target)
    return str(dest)
