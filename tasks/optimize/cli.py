"""``helios optimize --model NAME|PATH [--sample DIR] [--labels CSV] --out DIR``: export, gate, build variants, select.

Pure stage logic (no Prefect, no MLflow): ``helios.optimize_command`` adds the config and the MLflow tracking."""
from __future__ import annotations

import csv
from pathlib import Path

from helios.errors import UsageError
from tasks.optimize.config import OptimizeConfig
from tasks.optimize.core import optimize_model


def sample_paths(root: Path, n: int) -> list[Path]:
    """Up to ``n`` files spread evenly over ``root`` (folders are often one class each); hidden files skipped."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts[-1:]))
    step = max(1, len(files) // max(n, 1))
    return files[::step][:n]


def demo_sample(modality: str, out: Path, n: int) -> tuple[Path, dict[str, str]]:
    """The demo corpus for the model's modality (digits or topic texts) with its labels."""
    from helios.data.demo import write_demo

    labels_csv = write_demo("text" if modality == "text" else "mnist", n, out)
    with labels_csv.open(newline="", encoding="utf-8") as fh:
        truth = {row["path"]: row["label"] for row in csv.DictReader(fh)}
    return labels_csv.parent / "files", truth


def run_optimize(adapter, sample: Path | None, out: Path, cfg: OptimizeConfig | None = None,
                 prepare_cfg=None, truth: dict[str, str] | None = None):
    """Detect the hardware, export with the parity gate, then optimize into ``out``.

    With no ``sample`` the demo corpus for the model's modality is written under ``out`` and its labels used;
    ``truth`` (path relative to ``sample`` -> label) adds accuracy per variant. Returns (result, profile).
    """
    from hardware import detect, recommend
    from tasks.prepare.config import PrepareConfig
    from tasks.prepare.core import prepare_model

    cfg = cfg or OptimizeConfig()
    prepare_cfg = prepare_cfg or PrepareConfig()
    out = out.resolve()  # the static quantizer runs in a temp working directory: relative paths would break there
    out.mkdir(parents=True, exist_ok=True)
    n = max(cfg.eval_samples, cfg.calibration_samples, prepare_cfg.parity_samples)
    if sample is None:
        sample, truth = demo_sample(adapter.modality, out / "demo-sample", n)
    paths = sample_paths(sample, n)
    if not paths:
        raise UsageError(f"sample directory {sample} holds no files: pass a directory of your input files to --sample")
    profile = detect(str(sample), io_probe_seconds=0.2)
    rec = recommend(profile)
    prepared = prepare_model(prepare_cfg, adapter, paths, out, rec.providers, rec.intra_op_threads)
    return optimize_model(cfg, adapter, prepared, paths, out, profile, rec, truth), profile
