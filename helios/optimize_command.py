"""``helios optimize``: the optimize stage on its own, with the pipeline's config and MLflow tracking.

The settings are the pipeline's (``--config`` and ``--set`` for ``model.*``, ``prepare.*``, ``optimize.*`` and
``tracking.*``; other sections are accepted and unused), so a model, a calibration method or a quality budget is
chosen the same way for both commands. Tracking goes where ``helios run`` puts it by default: an MLflow SQLite
store in the parent of ``--out`` (``helios-work/`` for ``--out helios-work/optimize``), one run per call with the
variants nested under it, and the selected model registered and promoted like the pipeline's.
"""
from __future__ import annotations

from pathlib import Path

from helios.config import PipelineConfig


def run_optimize_command(cfg: PipelineConfig, sample: Path | None, out: Path) -> tuple[object, dict | None]:
    """(OptimizeResult, champion summary or None when tracking is off)."""
    from flows.layout import read_truth
    from helios.models import load_model
    from tasks.optimize.cli import run_optimize

    adapter = load_model(cfg.model, cfg.prepare.allow_pickle, cfg.infer.max_image_pixels)
    truth, _ = read_truth(cfg.labels)
    result, profile = run_optimize(adapter, sample, out, cfg.optimize, cfg.prepare, truth)
    if not cfg.tracking.enabled:
        return result, None
    return result, track_optimize(cfg, result, out, adapter.name, profile.hardware_class)


def track_optimize(cfg: PipelineConfig, result, out: Path, model_name: str, hardware_class: str) -> dict:
    """One MLflow run for this call: settings, the variants as nested runs, the selected model registered."""
    from flows.tracking import Tracker, default_tracking_uri
    from flows.tracking_models import log_variants, register_champion
    from helios.compare import make_run_tags

    work_dir = out.resolve().parent
    uri = cfg.tracking.mlflow_uri or default_tracking_uri(work_dir)
    tags = {**make_run_tags(model_name, result.selected.name, hardware_class),
            "helios.command": "optimize", "mlflow.runName": f"optimize-{model_name}-{out.name}"}
    tracker = Tracker.start(uri, cfg.tracking.experiment, work_dir / "mlartifacts", tags)
    try:
        tracker.params({"config": cfg.model_dump(mode="json", include={"model", "prepare", "optimize"})})
        log_variants(result, tracker.run_id, uri)
        champion = register_champion(result, model_name, hardware_class, tracker.run_id, uri)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return {**champion, "tracking_uri": uri, "run_id": tracker.run_id}
