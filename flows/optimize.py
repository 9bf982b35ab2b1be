"""``helios optimize``: detect + prepare + optimize on a sample directory, tracked in MLflow like the pipeline.

The settings are the pipeline's (``--config`` and ``--set`` for ``model.*``, ``prepare.*``, ``optimize.*`` and
``tracking.*``; other sections are accepted and unused), so a model, a calibration method or a quality budget is
chosen the same way for both commands. Tracking goes where ``helios run`` puts it by default: an MLflow SQLite
store in the parent of ``--out`` (``helios-work/`` for ``--out helios-work/optimize``), one run per call with the
variants nested under it, and the selected model registered and promoted like the pipeline's.
"""
from __future__ import annotations

from pathlib import Path

from flows.inputs import sample_paths
from flows.config import PipelineConfig
from helios.errors import UsageError
from helios.catalog import RunCatalog
from helios.files import read_labels, write_json
from helios.models import load_model
from helios.redact import redact
from tasks.optimize.config import OptimizeConfig
from tasks.optimize.core import optimize_model
from tasks.optimize.known import KnownFailure, failures_of, merge
from tasks.optimize.result import OptimizeResult
from tasks.prepare.config import PrepareConfig


def optimize_command(cfg: PipelineConfig, sample: Path | None, out: Path) -> tuple[object, dict | None]:
    """(OptimizeResult, champion summary or None when tracking is off)."""
    adapter = load_model(cfg.model)
    truth, _ = read_labels(cfg.labels)
    result, profile = run_optimize(adapter, sample, out, cfg.optimize, cfg.prepare, truth)
    if not cfg.tracking.enabled:
        return result, None
    return result, track_optimize(cfg, result, out, adapter.name, profile.hardware_class)


def demo_sample(modality: str, out: Path, n: int) -> tuple[Path, dict[str, str]]:
    """The demo corpus for the model's modality (digits or topic texts) with its labels."""
    from helios.data.demo import write_demo

    labels_csv = write_demo("text" if modality == "text" else "mnist", n, out)
    truth, _ = read_labels(labels_csv)
    return labels_csv.parent / "files", truth


def run_optimize(adapter, sample: Path | None, out: Path, cfg: OptimizeConfig | None = None,
                 prepare_cfg: PrepareConfig | None = None, truth: dict[str, str] | None = None):
    """Detect the hardware, export with the parity gate, then optimize into ``out``.

    With no ``sample`` the demo corpus for the model's modality is written under ``out`` and its labels used;
    ``truth`` (path relative to ``sample`` -> label) adds accuracy per variant. Returns (result, profile).
    """
    from hardware import detect, recommend
    from tasks.prepare.core import prepare_model

    cfg = cfg or OptimizeConfig()
    prepare_cfg = prepare_cfg or PrepareConfig()
    out = out.resolve()  # the static quantizer runs in a temp working directory: relative paths would break there
    out.mkdir(parents=True, exist_ok=True)
    n = max(cfg.eval_samples, cfg.calibration_samples, prepare_cfg.parity_samples)
    if sample is None:
        sample, truth = demo_sample(adapter.modality, out / "demo-sample", n)
    files = sorted(p for p in sample.rglob("*") if p.is_file() and not p.name.startswith("."))
    paths = sample_paths(files, n)
    if not paths:
        raise UsageError(f"sample directory {sample} holds no files: pass a directory of your input files to --sample")
    profile = detect(str(sample), io_probe_seconds=0.2)
    rec = recommend(profile)
    prepared = prepare_model(prepare_cfg, adapter, paths, out, rec.providers, rec.intra_op_threads)
    record = RunCatalog.at(out).optimize_failures
    result = optimize_model(cfg, adapter, prepared, paths, out, profile, rec, truth, known=read_known(record))
    remember_failures(record, result, adapter.name, cfg)
    return result, profile


def optimize_in_run(cfg: OptimizeConfig, adapter, prepared, sample: list[Path], catalog: RunCatalog, profile, rec,
                    truth: dict[str, str] | None, manifest_path: Path, out_dir: Path | None = None) -> OptimizeResult:
    """The pipeline's optimize stage, sized to the run (the scan's item count) and told which variants are known to
    miss the quality budget here (the work directory's record, updated with this run's misses). The variants go to
    ``out_dir`` (default: the run's model folder; the GPU worker's own folder with ``infer.pool=gpu``)."""
    from tasks.optimize.task import optimize_stage

    record = catalog.optimize_failures
    result = optimize_stage(cfg, adapter, prepared, sample, out_dir or catalog.model_dir, profile, rec, truth,
                            run_items=run_size(manifest_path), known=read_known(record))
    remember_failures(record, result, adapter.name, cfg)
    return result


def run_size(manifest_path: Path) -> int:
    """Items the run will infer at most: the rows of the scan's manifest (read from the Parquet footer)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(manifest_path).metadata.num_rows


def read_known(path: Path) -> list[KnownFailure]:
    """The known failures recorded in ``path`` (none when it is missing or unreadable: they only save time)."""
    import json

    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("known_failures", [])
        return [KnownFailure.from_dict(row) for row in rows]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def remember_failures(path: Path, result: OptimizeResult, model_name: str, cfg: OptimizeConfig) -> None:
    """Add the lossy variants of ``result`` that missed the quality budget to the record in ``path``."""
    keys = result.context.get("recipe_keys", {})
    new = failures_of(result, model_name, result.context.get("hardware_class", ""), keys, cfg.min_agreement,
                      cfg.min_cosine)
    if new:
        rows = [r.to_dict() for r in merge(read_known(path), new)]
        write_json({"about": "variants that missed optimize's quality budget; not rebuilt for the same model, "
                             "hardware class and recipe (delete this file to rebuild them)", "known_failures": rows},
                   path)


def track_optimize(cfg: PipelineConfig, result, out: Path, model_name: str, hardware_class: str) -> dict:
    """One MLflow run for this call: settings, the variants as nested runs, the selected model registered."""
    from flows.tags import TAG_COMMAND, TAG_RUN_NAME, make_run_tags
    from flows.tracking import Tracker, default_tracking_uri
    from flows.reuse import source_key
    from flows.tracking_models import log_variants, register_champion

    work_dir = out.resolve().parent
    uri = cfg.tracking.mlflow_uri or default_tracking_uri(work_dir)
    tags = {**make_run_tags(model_name, result.selected.name, hardware_class),
            TAG_COMMAND: "optimize", TAG_RUN_NAME: f"optimize-{model_name}-{out.name}"}
    tracker = Tracker.start(uri, cfg.tracking.experiment, work_dir / "mlartifacts", tags)
    try:
        tracker.params({"config": redact(cfg.model_dump(mode="json", include={"model", "prepare", "optimize"}))})
        log_variants(result, tracker.run_id, uri)
        champion = register_champion(result, model_name, hardware_class, tracker.run_id, uri, cfg.model,
                                     champion_class=cfg.tracking.champion_class,
                                     max_regression=cfg.optimize.max_regression, source_key=source_key(cfg))
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish()
    return {**champion, "tracking_uri": uri, "run_id": tracker.run_id}
