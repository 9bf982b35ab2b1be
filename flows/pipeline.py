"""The Helios pipeline: detect → prepare → optimize → scan+infer → refine → review → report, one call each."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger

from flows.dispatch import run_infer_stage
from flows.layout import RunLayout, accuracy, decodable_root, read_truth, resolve_input, write_frame, write_json
from flows.tracking import PendingTracker, Tracker, default_tracking_uri
from helios.config import PipelineConfig
from helios.models import load_model
from tasks.detect.task import detect_stage
from tasks.infer.model_ref import make_model_ref
from tasks.infer.task import scan_stage
from tasks.optimize.task import optimize_stage
from tasks.prepare.task import prepare_stage
from tasks.refine.task import refine_stage
from tasks.report.task import report_stage
from tasks.review.task import review_stage


class Stopwatch:
    """Seconds per stage, in run order, for report.json and the MLflow metrics."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = round(now - self._t, 3)
        self._t = now


def sample_paths(manifest_path: Path, n: int) -> list[str]:
    """Up to ``n`` files (relative paths) spread evenly over the manifest (folders are often one class each)."""
    manifest = pd.read_parquet(manifest_path, columns=["path", "size_bytes"])
    manifest = manifest[manifest["size_bytes"] > 0]
    step = max(1, len(manifest) // max(n, 1))
    return manifest["path"].iloc[::step].head(n).tolist()


@flow(name="helios-pipeline", log_prints=True)
def helios_pipeline(config: PipelineConfig = PipelineConfig()) -> dict:
    """Run the seven stages on ``config.input`` (or the built-in demo) and write the run directory."""
    from prefect.runtime import flow_run

    log = get_run_logger()
    layout = RunLayout.of(config)
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    ui_url = flow_run.ui_url if flow_run.ui_url and not flow_run.ui_url.startswith("None") else None  # None: no UI
    run_id = flow_run.id  # read here: the runtime context does not follow into the tracking thread
    tracking = PendingTracker(lambda: start_tracking(config, layout, run_id, ui_url),
                              background=not config.tracking.mlflow_uri)
    try:
        input_root, labels_csv = resolve_input(config, layout)
        truth, groups = read_truth(labels_csv)
        write_json(config.model_dump(mode="json"), layout.run_dir / "config.json")
        adapter = load_model(config.model, config.prepare.allow_pickle, config.infer.max_image_pixels)
        clock = Stopwatch()
        profile, rec = detect_stage(input_root)
        clock.lap("detect")

        scan = scan_stage(input_root, str(layout.run_dir))
        remote_copies = layout.run_dir / "input-copies"  # remote input: the files later stages decode, fetched once
        rels = sample_paths(scan.manifest_path, max(config.optimize.eval_samples, config.prepare.parity_samples))
        sample_root = decodable_root(input_root, rels, remote_copies, config.infer.max_file_bytes)
        sample = [Path(sample_root) / rel for rel in rels]
        prepared = prepare_stage(config.prepare, adapter, sample, layout.model_dir, rec.providers, rec.intra_op_threads)
        clock.lap("prepare")

        optimized = optimize_stage(config.optimize, adapter, prepared, sample, layout.model_dir, profile, rec, truth)
        clock.lap("optimize")

        model_ref = make_model_ref(config.model, optimized.selected.path, optimized.selected.name,
                                   tuple(optimized.selected.providers), rec.intra_op_threads, config.infer.max_image_pixels)
        inferred = run_infer_stage(config.infer, model_ref, str(scan.manifest_path), str(layout.run_dir), profile.to_dict())
        clock.lap("infer")

        predictions = pd.read_parquet(inferred.predictions_path)
        decoded_later = config.refine.enabled or config.review.enabled
        wanted = predictions.loc[predictions["status"] == "ok", "path"] if decoded_later else []
        files_root = decodable_root(input_root, wanted, remote_copies, config.infer.max_file_bytes)
        predictions, refine_summary = refine_stage(config.refine, predictions, Path(files_root), adapter,
                                                   Path(optimized.selected.path), layout.model_dir / "refine",
                                                   tuple(optimized.selected.providers), rec.intra_op_threads, truth)
        write_frame(predictions, layout.predictions)
        clock.lap("refine")

        predictions, review_summary = review_stage(config.review, predictions, files_root, adapter.labels,
                                                   adapter.modality, str(layout.work_dir / "llm-cache"))
        write_frame(predictions, layout.predictions)
        clock.lap("review")

        per_group = group_accuracy(predictions, truth, groups)
        if per_group and refine_summary.get("status") == "done":  # the report's per-corruption gain table and figure
            refine_summary["per_corruption"] = {
                name: {stage: round(1.0 - acc[stage], 4) for stage in ("infer", "refine") if stage in acc}
                for name, acc in per_group.items()}
        tracker = tracking.result()
        summary = {
            "hardware": profile.to_dict(), "recommendation": rec.to_dict(), "config": config.model_dump(mode="json"),
            "input": input_root, "labels": labels_csv, "model": {"name": adapter.name, "variant": optimized.selected.name,
                                                                  "parity": prepared.parity},
            "counts": inferred.counts, "stages": clock.stages, "variants": [v.to_dict() for v in optimized.variants],
            "throughput": inferred.throughput, "files_per_s": inferred.files_per_s,
            "accuracy": stage_accuracy(predictions, truth), "per_group": per_group,
            "refine": refine_summary, "review": review_summary,
            "mlflow": {"tracking_uri": tracker.tracking_uri, "run_id": tracker.run_id},
            "prefect": {"flow_run_id": str(run_id), "flow_run_url": ui_url},
        }
        report = report_stage(config.report, summary, str(layout.run_dir), adapter.labels)
        clock.lap("report")
        summary["stages"] = clock.stages
        finish_report(Path(report["report_json"]), clock.stages)
        track_results(tracker, summary, optimized, layout, adapter.name, profile.hardware_class)
        tracker.finish("FINISHED")
    except BaseException:
        tracking.finish_failed()
        raise
    log.info("Helios run finished: %s files in %.1f s", inferred.counts.get("files"), sum(clock.stages.values()))
    return {"run_dir": str(layout.run_dir), "report": report, "mlflow_run_id": tracker.run_id,
            "tracking_uri": tracker.tracking_uri, "counts": inferred.counts, "accuracy": summary["accuracy"]}


def finish_report(report_json: Path, stages: dict[str, float]) -> None:
    """Add the report stage's own seconds to report.json (known only after the stage has written it)."""
    data = json.loads(report_json.read_text(encoding="utf-8"))
    data["stages"] = stages
    write_json(data, report_json)


def stage_accuracy(predictions: pd.DataFrame, truth: dict[str, str] | None) -> dict[str, float]:
    """Accuracy of the labels as each stage left them: infer_label, then refined_label where refinement set one, then label."""
    refined = predictions.get("refined_label", pd.Series(None, index=predictions.index, dtype=object))
    frame = predictions.assign(_after_refine=refined.fillna(predictions["infer_label"]))
    values = {stage: accuracy(frame, col, truth) for stage, col in
              (("infer", "infer_label"), ("refine", "_after_refine"), ("review", "label"))}
    return {k: v for k, v in values.items() if v is not None}


def group_accuracy(predictions: pd.DataFrame, truth: dict[str, str] | None,
                   groups: dict[str, str] | None) -> dict[str, dict[str, float]] | None:
    """Accuracy after each stage per demo group (clean or the corruption's name), when labels carry groups."""
    if not groups or truth is None:
        return None
    group_of = predictions["path"].map(groups)
    return {name: stage_accuracy(predictions[group_of == name], truth) for name in sorted(group_of.dropna().unique())}


def start_tracking(config: PipelineConfig, layout: RunLayout, flow_run_id, flow_run_url) -> Tracker:
    if not config.tracking.enabled:
        return Tracker.off()
    uri = config.tracking.mlflow_uri or default_tracking_uri(layout.work_dir)
    tags = {"helios.model": config.model.name, "prefect.flow_run_id": str(flow_run_id),
            "mlflow.runName": f"{config.model.name}-{Path(config.out).name}"}
    if flow_run_url:
        tags["prefect.flow_run_url"] = str(flow_run_url)
    tracker = Tracker.start(uri, config.tracking.experiment, layout.work_dir / "mlartifacts", tags)
    tracker.params({"config": config.model_dump(mode="json")})
    return tracker


def track_results(tracker: Tracker, summary: dict, optimized, layout: RunLayout, model_name: str, hw_class: str) -> None:
    """Params, metrics, tags and artifacts of the run; variants as nested runs; the champion in the registry."""
    if not tracker.enabled:
        return
    from flows.tracking_models import log_variants, register_champion
    from tasks.review.core import review_metrics

    review = summary.get("review") or {}
    tracker.tags({"helios.variant": summary["model"]["variant"], "helios.hardware_class": hw_class})
    tracker.params({"hardware": {"class": hw_class, "cpu": summary["hardware"].get("cpu", {}).get("model")}})
    tracker.metrics({
        "stage_seconds": summary["stages"], "files": summary["counts"], "throughput_files_per_s": summary["files_per_s"],
        "accuracy": summary["accuracy"], "accuracy_final": summary["accuracy"].get("review"),
        "llm_cost_usd": review.get("cost_usd", 0.0), "run_cost_usd": review.get("cost_usd", 0.0),
    })
    if review.get("status") == "done":
        tracker.metrics(review_metrics(review))
    for name in ("predictions.parquet", "manifest.parquet", "report.json", "report.html", "variants.csv", "config.json"):
        tracker.artifact(layout.run_dir / name)
    log_variants(optimized, tracker.run_id, tracker.tracking_uri)
    summary["champion"] = register_champion(optimized, model_name, hw_class, tracker.run_id, tracker.tracking_uri)
