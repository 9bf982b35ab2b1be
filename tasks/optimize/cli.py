"""``helios optimize --model NAME|PATH [--sample DIR] --out DIR``: export, gate, build variants, select."""
from __future__ import annotations

import csv
from pathlib import Path

from tasks.optimize.config import OptimizeConfig
from tasks.optimize.core import optimize_model
from tasks.optimize.result import OptimizeResult


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


def run_optimize(model: str, sample: Path | None, out: Path, cfg: OptimizeConfig | None = None) -> OptimizeResult:
    """Build the adapter, detect the hardware, export with the parity gate, then optimize into ``out``."""
    from hardware import detect, recommend
    from helios.config import ModelConfig
    from helios.models import load_model
    from tasks.prepare.config import PrepareConfig
    from tasks.prepare.core import prepare_model

    cfg = cfg or OptimizeConfig()
    adapter = load_model(ModelConfig(name=model))
    out.mkdir(parents=True, exist_ok=True)
    n = max(cfg.eval_samples, cfg.calibration_samples)
    truth = None
    if sample is None:
        sample, truth = demo_sample(adapter.modality, out / "demo-sample", n)
    paths = sample_paths(sample, n)
    profile = detect(str(sample), io_probe_seconds=0.2)
    rec = recommend(profile)
    prepared = prepare_model(PrepareConfig(), adapter, paths, out, rec.providers, rec.intra_op_threads)
    return optimize_model(cfg, adapter, prepared, paths, out, profile, rec, truth)
