"""The Helios pipeline: detect → prepare → optimize → scan+infer → refine → review → report, one call each."""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger

from flows.config import PipelineConfig
from flows.deployments import check_deployment_parameters, running_deployment_id
from flows.dispatch import build_and_infer_on_gpu, run_infer_stage, variant_for_pool
from flows.gpu_stages import GpuStagesResult, ModelBuild, shared_model
from flows.inputs import decodable_root, manifest_sample, resolve_input, table_spec
from flows.predictions import read_predictions, save_predictions
from flows.lineage import RunInputs
from flows.logs import configure_logging, set_log_context
from flows.optimize import optimize_in_run
from flows.run_metrics import publish_failure, publish_run, run_drift
from flows.review_traces import review_tracer
from flows.refine_infer import refine_context
from flows.reuse import ReusedModel, class_champion, is_model_uri, registered_model, source_key
from flows.tracking import PendingTracker, Tracker, default_tracking_uri, start_tracking, track_run
from helios.catalog import RunCatalog
from helios.files import read_labels, write_json
from helios.heap import trim_heap
from helios.models import ModelAdapter, ModelConfig, load_model
from helios.redact import redact, redact_uri
from tasks.detect.task import detect_stage
from tasks.infer.model_ref import ModelRef, make_model_ref
from tasks.infer.scan import system_memory_pool
from tasks.infer.task import scan_stage
from tasks.optimize.result import OptimizeResult
from tasks.prepare.core import PreparedModel
from tasks.prepare.task import prepare_stage
from tasks.refine.task import refine_stage
from tasks.report.accuracy import corruption_errors, group_accuracy, stage_accuracy
from tasks.report.costs import run_costs
from tasks.report.summary import RunSummary
from tasks.report.task import report_stage
from tasks.review.task import review_stage


@flow(name="helios-pipeline", log_prints=True)
def helios_pipeline(config: PipelineConfig = PipelineConfig()) -> dict:
    """Run the seven stages on ``config.input`` (or the built-in demo) and write the run directory."""
    catalog = RunCatalog.at(config.out).create()
    tracking = begin_tracking(config, catalog)
    try:
        # Arrow allocates with the system allocator for the run (the process's own pool is restored after): mimalloc
        # kept what Arrow freed, so each Arrow-heavy step (predictions read, true labels, refine's matching) left
        # the run at its high-water mark out of trim_heap's reach (200,000 files: both peaks 60-120 MB lower)
        with system_memory_pool(tune_malloc=False):
            run = open_run(config, catalog, tracking)
            profile, rec = run.clock.lap("detect", detect_stage(run.input_root))
            scan = scan_stage(run.input_root, str(catalog.run_dir), table_spec(config, run.adapter.modality))
            if run.builds_on_gpu:  # prepare + optimize + infer on the GPU worker, for its own hardware
                prepared, optimized, inferred = build_on_gpu(run, scan.manifest_path, tracking)
            else:
                prepared, optimized = prepare_and_optimize(run, scan.manifest_path, profile, rec, tracking)
                model_ref = selected_model(run.model, optimized, rec.intra_op_threads, config.infer.pool)
                inferred = run.clock.lap("infer", run_infer_stage(config.infer, model_ref, str(scan.manifest_path),
                                                                  str(catalog.run_dir), profile.to_dict(), rec.batch_size))
            files_root = run.files_root(inferred)
            refiner = refine_context(run, Path(optimized.selected.path), run.local_providers(optimized, rec), rec, profile)
            predictions, refined = run.clock.lap("refine", refine_stage(refiner, run.predictions(inferred),
                                                                        Path(files_root), run.truth))
            predictions, reviewed = run.clock.lap("review", review_stage(
                config.review, run.save(predictions), files_root, run.adapter.labels, run.adapter.modality,
                str(catalog.llm_cache), review_tracer(config.tracking, tracking.result())))
            summary = summarize(run, run.save(predictions), (profile, rec), prepared, optimized, inferred,
                                (refined, reviewed), tracking)
            del predictions  # the report reads the columns it looks at from predictions.parquet: not two frames at once
            report = run.clock.lap("report", report_stage(config.report, summary, str(catalog.run_dir), run.adapter.labels))
            summary.stages = finish_report(catalog, run.clock.stages)
            track_run(tracking.result(), summary, optimized, catalog, run.inputs())
            publish_run(config, catalog, summary)
    except BaseException as exc:
        tracking.finish_failed(exc)
        publish_failure(config, catalog)
        raise
    get_run_logger().info("Helios run finished: %s files in %.1f s", inferred.counts.get("files"), sum(summary.stages.values()))
    return {"run_dir": str(catalog.run_dir), "report": report, "mlflow_run_id": summary.mlflow["run_id"],
            "tracking_uri": summary.mlflow["tracking_uri"], "counts": inferred.counts, "accuracy": summary.accuracy,
            "reused": summary.model.get("reused")}


class Stopwatch:
    """Seconds per stage, in run order, for report.json and the MLflow metrics."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str, value=None):
        """Record the seconds since the last lap under ``name``; return ``value`` (the stage's result). The heap the
        stage freed goes back to the OS first (``trim_heap``): the next stage starts from what is really held."""
        trim_heap()
        now = time.perf_counter()
        self.stages[name] = round(now - self._t, 3)
        self._t = now
        return value

    def split(self, measured: dict[str, float], rest: str, value=None):
        """Record stages timed elsewhere (``measured``: the GPU worker's seconds) and the rest of the time since the
        last lap (dispatch, waiting for a slot, the worker's start) under ``rest``; return ``value``."""
        now = time.perf_counter()
        self.stages.update({name: round(seconds, 3) for name, seconds in measured.items()})
        self.stages[rest] = round(max(now - self._t - sum(measured.values()), 0.0), 3)
        self._t = now
        return value


@dataclass
class OpenRun:
    """What every stage of one run reads: where the files are, the true labels, the model, the clock."""

    config: PipelineConfig
    catalog: RunCatalog
    input_root: str
    labels_csv: str | None
    truth: Mapping[str, str] | None  # helios.labels.PathLabels: held in Arrow, not a dict entry per file
    groups: Mapping[str, str] | None
    adapter: ModelAdapter
    clock: Stopwatch
    model: ModelConfig  # config.model, or the ModelConfig of the registered version --model models:/... names
    reused: ReusedModel | None = None  # the registered version this run uses instead of preparing and optimizing
    source_key: str | None = None  # what a champion registered by this run is optimized from (flows/reuse.py)
    sample: tuple[str, ...] = ()  # the files prepare and optimize measure on, relative to the input root
    gpu: GpuStagesResult | None = None  # what the GPU worker built and inferred (infer.pool=gpu)

    @property
    def builds_on_gpu(self) -> bool:
        """infer.pool=gpu: the GPU worker prepares and optimizes for its own hardware (a registered version this
        run was given is sent as it is)."""
        return self.config.infer.pool == "gpu" and self.reused is None

    def local_providers(self, optimized, rec) -> tuple[str, ...]:
        """The providers this machine runs the selected variant on (refine): its own when the GPU worker chose."""
        return tuple(rec.providers if self.gpu else optimized.selected.providers)

    def local_sample(self, manifest_path: Path, n: int) -> list[Path]:
        """Up to ``n`` input files spread over the manifest, as local paths (remote ones copied once)."""
        rels = manifest_sample(manifest_path, n)
        self.sample = tuple(rels)
        root = decodable_root(self.input_root, rels, self.catalog.input_copies, self.config.infer.max_file_bytes,
                              manifest_path)
        return [Path(root) / rel for rel in rels]

    def inputs(self) -> RunInputs:
        """What the run read, for the datasets of its MLflow run (the sample only when optimize measured on it)."""
        return RunInputs(self.input_root, self.labels_csv, self.sample if self.config.optimize.enabled else ())

    def predictions(self, inferred) -> pd.DataFrame:
        return read_predictions(inferred.predictions_path)  # list columns (infer.outputs) stay on disk

    def files_root(self, inferred) -> str:
        """A local root holding the ok files that refine and review decode (remote input: copied once)."""
        wanted = []
        if self.config.refine.enabled or self.config.review.enabled:
            frame = pd.read_parquet(inferred.predictions_path, columns=["path", "status"])
            wanted = frame.loc[frame["status"] == "ok", "path"]
        return decodable_root(self.input_root, wanted, self.catalog.input_copies, self.config.infer.max_file_bytes,
                              self.catalog.manifest)

    def save(self, predictions: pd.DataFrame) -> pd.DataFrame:
        """Write predictions.parquet as the stages leave it (a later failure keeps what was done); return it."""
        save_predictions(predictions, self.catalog.predictions)  # the infer stage's list columns carried over
        return predictions


def open_run(config: PipelineConfig, catalog: RunCatalog, tracking: PendingTracker) -> OpenRun:
    """Resolve the input, labels and model (a ``models:/`` URI: its registered version, downloaded), load the
    model, write config.json; fails in the first second on bad input."""
    check_deployment_parameters(config.model, running_deployment_id())
    input_root, labels_csv = resolve_input(config, catalog)
    truth, groups = read_labels(labels_csv)
    write_json(redact(config.model_dump(mode="json")), catalog.config)
    reused, model = None, config.model
    if is_model_uri(config.model.name):
        tracking.result()  # the local store may be being created by the run's own tracking start: wait for it
        reused = registered_model(config.model.name, tracking_uri(config, catalog), catalog.model_dir)
        model = reused.model
        check_deployment_parameters(model, running_deployment_id())  # the version's own settings, too
    return OpenRun(config, catalog, input_root, labels_csv, truth, groups, load_model(model), Stopwatch(), model,
                   reused, None if reused else source_key(config))


def prepare_and_optimize(run: OpenRun, manifest_path: Path, profile, rec, tracking: PendingTracker):
    """(prepared, optimized): the prepare and optimize stages, or a registered version reused instead (the
    ``models:/`` URI, else this hardware class's champion when it was optimized from the same model and settings)."""
    config, catalog = run.config, run.catalog
    if run.reused is None and config.tracking.enabled and config.optimize.reuse_champion:
        tracking.result()
        run.reused = class_champion(config.model.name, profile.hardware_class, tracking_uri(config, catalog),
                                    catalog.model_dir, run.source_key)
    if run.reused is not None:
        prepared = run.clock.lap("prepare", run.reused.prepared())
        return prepared, run.clock.lap("optimize", run.reused.optimized(catalog.model_dir, config.optimize.min_gain))
    sample = run.local_sample(manifest_path, max(config.optimize.eval_samples, config.prepare.parity_samples))
    prepared = run.clock.lap("prepare", prepare_stage(config.prepare, run.adapter, sample, catalog.model_dir,
                                                      rec.providers, rec.intra_op_threads))
    return prepared, run.clock.lap("optimize", optimize_in_run(config.optimize, run.adapter, prepared, sample,
                                                               catalog, profile, rec, run.truth, manifest_path))


def build_on_gpu(run: OpenRun, manifest_path: Path, tracking: PendingTracker):
    """(prepared, optimized, inferred) from the GPU deployment, which detects its own hardware, reuses its class's
    champion or prepares and optimizes for it, and infers: nothing is built here, so no variant selected on this
    machine reaches a GPU. The worker reads the sample, writes ``model-gpu/`` and looks up champions in this run's
    MLflow store (all on the shared volume, or the tracking server)."""
    config, catalog = run.config, run.catalog
    sample = run.local_sample(manifest_path, max(config.optimize.eval_samples, config.prepare.parity_samples))
    reuse = config.tracking.enabled and config.optimize.reuse_champion
    if reuse:
        tracking.result()  # the local store may be being created by the run's own tracking start: wait for it
    truth = {rel: run.truth[rel] for rel in run.sample if rel in run.truth} if run.truth else None
    build = ModelBuild(model=shared_model(run.model), prepare=config.prepare, optimize=config.optimize,
                       sample=tuple(str(p.resolve()) for p in sample), truth=truth,
                       model_dir=str(catalog.gpu_model_dir), source_key=run.source_key,
                       tracking_uri=tracking_uri(config, catalog) if reuse else None)
    run.gpu = gpu = build_and_infer_on_gpu(config.infer, build, str(manifest_path), str(catalog.run_dir))
    if gpu.reused:
        run.sample = ()  # the worker reused a champion: nothing was measured on the sample
    prepared = PreparedModel(Path(gpu.prepared["onnx_path"]), gpu.prepared["exported"], gpu.prepared["parity"])
    optimized = OptimizeResult.from_dict(gpu.optimized, Path(gpu.optimize_json))
    seconds = {name: gpu.stages[name] for name in ("prepare", "optimize")}
    return prepared, optimized, run.clock.split(seconds, "infer", gpu.infer)


def tracking_uri(config: PipelineConfig, catalog: RunCatalog) -> str:
    """The MLflow store of this run (and of its registry)."""
    return config.tracking.mlflow_uri or default_tracking_uri(catalog.work_dir)


def flow_run_info() -> dict:
    """This flow run's id and UI address (None without a UI), read in the flow's thread."""
    from prefect.runtime import flow_run

    url = flow_run.ui_url if flow_run.ui_url and not flow_run.ui_url.startswith("None") else None
    return {"flow_run_id": str(flow_run.id), "flow_run_url": url}


def begin_tracking(config: PipelineConfig, catalog: RunCatalog) -> PendingTracker:
    """Install the log format (HELIOS_LOG_FORMAT), start the MLflow run: in the background for the local store (it
    overlaps the first stages)."""
    info = flow_run_info()
    configure_logging(run=catalog.run_dir.name, flow_run_id=info["flow_run_id"], run_id=None)

    def start() -> Tracker:
        tracker = start_tracking(config, catalog, info["flow_run_id"], info["flow_run_url"])
        set_log_context(run_id=tracker.run_id)  # the MLflow run id on every JSON log line from here on
        return tracker

    return PendingTracker(start, background=not config.tracking.mlflow_uri, prefect=info)


def selected_model(model: ModelConfig, optimized, threads: int, pool: str = "local") -> ModelRef:
    """The infer stage's handle on the variant the optimize stage selected (for the GPU pool never a CPU-only one:
    ``flows.dispatch.variant_for_pool``)."""
    chosen = variant_for_pool(optimized, pool)
    return make_model_ref(model, chosen.path, chosen.name, tuple(chosen.providers), threads)


def model_summary(run: OpenRun, prepared, optimized, hardware_class: str) -> dict:
    """report.json's model section: which variant was selected on which hardware class (the GPU worker's with
    infer.pool=gpu), which one the infer stage ran, and the registered version reused, if any."""
    reused = run.reused.describe() if run.reused else (run.gpu.reused if run.gpu else None)
    infer_variant = optimized.selected if run.gpu else variant_for_pool(optimized, run.config.infer.pool)
    return {"name": run.adapter.name, "variant": optimized.selected.name, "parity": prepared.parity,
            "source_key": run.source_key, **({"reused": reused} if reused else {}),
            "hardware_class": run.gpu.hardware_class if run.gpu else hardware_class,
            "infer_variant": infer_variant.name}


def summarize(run: OpenRun, predictions: pd.DataFrame, hardware, prepared, optimized, inferred, later,
              tracking: PendingTracker) -> RunSummary:
    """The run's RunSummary: what each stage measured, accuracy after each stage, where it is tracked."""
    (profile, rec), (refined, reviewed) = hardware, later
    per_group = group_accuracy(predictions, run.truth, run.groups)
    if per_group and refined.get("status") == "done":
        refined["per_corruption"] = corruption_errors(per_group)
    tracker = tracking.result()
    accuracy = stage_accuracy(predictions, run.truth)
    costs = run_costs(profile.hardware_class, run.config.tracking.hourly_usd, run.clock.stages,
                      int(inferred.counts.get("files") or 0), float(reviewed.get("cost_usd") or 0.0))
    return RunSummary(
        hardware=profile.to_dict(), recommendation=rec.to_dict(), config=redact(run.config.model_dump(mode="json")),
        input=redact_uri(run.input_root), labels=redact_uri(run.labels_csv),
        model=model_summary(run, prepared, optimized, profile.hardware_class),
        counts=inferred.counts, stages=dict(run.clock.stages), variants=[v.to_dict() for v in optimized.variants],
        throughput=inferred.throughput, files_per_s=inferred.files_per_s,
        accuracy=accuracy, per_group=per_group, refine=refined, review=reviewed,
        mlflow={"tracking_uri": redact_uri(tracker.tracking_uri), "run_id": tracker.run_id}, prefect=tracking.prefect,
        drift=run_drift(run.catalog, predictions, accuracy, refined), costs=costs, outputs=inferred.outputs,
        worker=({"hardware": run.gpu.hardware, "recommendation": run.gpu.recommendation, "stages": run.gpu.stages}
                if run.gpu else {}))


def finish_report(catalog: RunCatalog, stages: dict[str, float]) -> dict[str, float]:
    """Add the report stage's own seconds to report.json (known only after the stage has written it)."""
    import json

    data = json.loads(catalog.report_json.read_text(encoding="utf-8"))
    data["stages"] = dict(stages)
    write_json(data, catalog.report_json)
    return dict(stages)
