"""MLflow tracking for a pipeline run, by explicit run id (tasks run in worker threads, so no implicit active run)."""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flows.tags import TAG_ERROR, TAG_RUN_NAME
from helios.nested import flatten
from helios.redact import redact, redact_uri

log = logging.getLogger(__name__)

PARAM_LIMIT = 6000  # MLflow's max param value length in recent versions
KEY_LIMIT = 250  # MLflow's max metric and param key length
_KEY_OK = re.compile(r"[\w.\- :/]")  # what MLflow accepts in a metric or param key (besides the path rule)


def mlflow_key(name: str) -> str:
    """``name`` as a key MLflow accepts: each character it rejects (``& + ' ? ( )`` ...) as ``_xHH_`` (its code
    point in hex), a slash too where the key would not be a normal path (``a//b``, ``../x``), and a key over 250
    characters cut with a hash of the whole. Keys MLflow accepts are unchanged, so ``rock&roll`` logs as
    ``rock_x26_roll`` and ``cat`` as ``cat``."""
    key = "".join(c if _KEY_OK.fullmatch(c) else f"_x{ord(c):02x}_" for c in name)
    if key and (posixpath.normpath(key) != key or key.startswith(("/", ".."))):
        key = key.replace("/", "_x2f_")
        if key in (".", "..") or key.startswith(".."):
            key = key.replace(".", "_x2e_")
    if len(key) > KEY_LIMIT:
        key = f"{key[:KEY_LIMIT - 17]}_{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return key


def default_tracking_uri(work_dir: Path) -> str:
    return f"sqlite:///{(work_dir / 'mlflow.db').resolve()}"


@dataclass
class Tracker:
    """One MLflow run of the pipeline. ``Tracker.off()`` is a no-op tracker for tracking.enabled=false."""

    tracking_uri: str | None
    run_id: str | None
    client: Any = None
    monitor: Any = None  # the system metrics monitor sampling during the run (flows/system_metrics.py)
    saved_globals: "MlflowGlobals | None" = None  # MLflow's process-wide state before start(), put back by finish()

    @classmethod
    def off(cls) -> "Tracker":
        return cls(None, None)

    @classmethod
    def start(cls, tracking_uri: str, experiment: str, artifact_root: Path, tags: dict[str, str]) -> "Tracker":
        import mlflow
        from mlflow.tracking import MlflowClient

        from flows.experiment import ensure_experiment

        client = MlflowClient(tracking_uri)
        exp_id = ensure_experiment(client, experiment,
                                   artifact_root.resolve().as_uri() if tracking_uri.startswith("sqlite") else None)
        run = client.create_run(exp_id, tags=tags, run_name=tags.get(TAG_RUN_NAME))
        saved = MlflowGlobals.save()
        # For the fluent API while the run lasts (model logging, the review's traces); finish() puts back what the
        # process had, so Helios used as a library leaves MLflow's globals as it found them.
        mlflow.set_tracking_uri(tracking_uri)
        return cls(tracking_uri, run.info.run_id, client, saved_globals=saved)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def params(self, params: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), str(v)[:PARAM_LIMIT]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        items = [Metric(mlflow_key(k), float(v), now, step) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float))]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            if self.enabled and value is not None:
                self.client.set_tag(self.run_id, key, str(value))

    def artifact(self, path: Path, subdir: str | None = None) -> None:
        if self.enabled and path.exists():
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), subdir)
            else:
                self.client.log_artifact(self.run_id, str(path), subdir)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            from flows.system_metrics import stop_system_metrics

            stop_system_metrics(self.monitor)  # before the run ends: a finished run takes no more metrics
            self.monitor = None
            try:
                self.client.set_terminated(self.run_id, status)
            finally:
                if self.saved_globals is not None:
                    self.saved_globals.restore()
                    self.saved_globals = None


@dataclass(frozen=True)
class MlflowGlobals:
    """MLflow's process-wide tracking URI and active experiment: its module globals and the environment variables
    it mirrors them to (``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` write both)."""

    tracking_uri: str | None
    experiment_id: str | None
    environ: tuple[tuple[str, str | None], ...]

    ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")

    @classmethod
    def save(cls) -> "MlflowGlobals":
        # MLflow has no public getter for "not set" (get_tracking_uri() answers a default): its module globals are
        # read here, in the one place that touches them.
        from mlflow.tracking import fluent
        from mlflow.tracking._tracking_service import utils

        return cls(utils._tracking_uri, fluent._active_experiment_id,
                   tuple((name, os.environ.get(name)) for name in cls.ENV))

    def restore(self) -> None:
        import mlflow
        from mlflow.tracking import fluent

        mlflow.set_tracking_uri(self.tracking_uri)  # also resets MLflow's tracer to the restored URI
        fluent._active_experiment_id = self.experiment_id
        for name, value in self.environ:
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class PendingTracker:
    """A Tracker being started. With ``background`` (the local SQLite store) the start runs in a thread: creating the
    store's tables takes seconds that then overlap the first stages. A remote server is contacted at once, so a bad
    URI fails before any work is done."""

    def __init__(self, start: Callable[[], Tracker], background: bool, prefect: dict | None = None):
        self.prefect = prefect or {}  # the Prefect flow run this tracking belongs to (id, UI address)
        if background:
            pool = ThreadPoolExecutor(1, thread_name_prefix="mlflow-start")
            self._future = pool.submit(start)
            pool.shutdown(wait=False)
        else:
            self._future = Future()
            self._future.set_result(start())

    def result(self) -> Tracker:
        return self._future.result()

    def finish_failed(self, error: BaseException | None = None) -> None:
        """Mark the run FAILED with the error (tag ``helios.error``) if it got started; a start that itself failed
        leaves nothing to mark."""
        try:
            tracker = self._future.result()
        except Exception:  # noqa: BLE001 - the run's own error is what the user needs to see
            return
        if error is not None:
            tracker.tags({TAG_ERROR: redact_uri(f"{type(error).__name__}: {error}")[:5000]})
        tracker.finish("FAILED")


def start_tracking(config, catalog, flow_run_id, flow_run_url) -> Tracker:
    """Open the run's MLflow run (``Tracker.off()`` when tracking is disabled) and log the settings."""
    from flows.system_metrics import start_system_metrics
    from flows.tags import TAG_FLOW_RUN_ID, TAG_FLOW_RUN_URL, TAG_MODEL, TAG_SOURCE_NAME, TAG_SOURCE_TYPE

    if not config.tracking.enabled:
        return Tracker.off()
    uri = config.tracking.mlflow_uri or default_tracking_uri(catalog.work_dir)
    tags = {TAG_MODEL: config.model.name, TAG_FLOW_RUN_ID: str(flow_run_id),
            TAG_RUN_NAME: f"{config.model.name}-{Path(config.out).name}",
            TAG_SOURCE_NAME: "helios-pipeline", TAG_SOURCE_TYPE: "JOB"}  # the Prefect flow that made the run
    if flow_run_url:
        tags[TAG_FLOW_RUN_URL] = str(flow_run_url)
    tracker = Tracker.start(uri, config.tracking.experiment, catalog.mlflow_artifacts, tags)
    tracker.params({"config": redact(config.model_dump(mode="json"))})
    tracker.monitor = start_system_metrics(tracker.run_id, uri, config.tracking.system_metrics_s)
    return tracker


def track_run(tracker: Tracker, summary, optimized, catalog, inputs=None) -> None:
    """Params, metrics, tags and artifacts of a finished run; the files it read (``inputs``, a
    ``flows.lineage.RunInputs``) as datasets; variants as nested runs; the champion in the registry; then the
    review's traces are flushed and the run is marked FINISHED."""
    if not tracker.enabled:
        return
    from flows.tags import METRIC_ACCURACY, METRIC_LLM_COST, METRIC_RUN_COST, METRIC_THROUGHPUT, TAG_HARDWARE_CLASS, TAG_VARIANT
    from flows.tags import METRIC_COMPUTE_COST, METRIC_COST_PER_1K
    from flows.lineage import log_datasets, run_datasets
    from flows.review_traces import flush_traces
    from flows.tracking_models import log_variants, register_champion
    from helios.models.config import ModelConfig
    from tasks.review.core import review_metrics

    hw_class = summary.model_class  # the GPU worker's with infer.pool=gpu: its champion-<class> is registered
    tracker.tags({TAG_VARIANT: summary.model["variant"], TAG_HARDWARE_CLASS: hw_class})
    tracker.params({"hardware": {"class": hw_class, "cpu": summary.hardware.get("cpu", {}).get("model")}})
    tracker.metrics({
        "stage_seconds": summary.stages, "files": summary.counts, METRIC_THROUGHPUT: summary.files_per_s,
        "accuracy": summary.accuracy, METRIC_ACCURACY: summary.accuracy.get("review"),
        "accuracy_by_group": summary.per_group or {},  # group names come from the labels CSV: keys are encoded
        METRIC_LLM_COST: summary.llm_cost_usd, METRIC_RUN_COST: summary.run_cost_usd,
        METRIC_COMPUTE_COST: summary.compute_cost_usd, METRIC_COST_PER_1K: summary.costs.get("total_per_1k_files_usd"),
    })
    if summary.review.get("status") == "done":
        tracker.metrics(review_metrics(summary.review))
    for path in catalog.tracked:
        tracker.artifact(path)
    if inputs is not None:
        log_datasets(tracker.client, tracker.run_id, run_datasets(inputs, catalog.manifest))
    log_variants(optimized, tracker.run_id, tracker.tracking_uri)
    reused = summary.model.get("reused")
    if reused:  # a registered version was reused (flows/reuse.py): nothing new to register
        summary.model["version"] = reused["version"]
    else:
        settings = summary.config
        champion = register_champion(optimized, summary.model["name"], hw_class, tracker.run_id, tracker.tracking_uri,
                                     ModelConfig.model_validate(settings["model"]),
                                     champion_class=settings["tracking"].get("champion_class"),
                                     max_regression=settings["optimize"].get("max_regression", 0.5),
                                     source_key=summary.model.get("source_key"))
        summary.model["version"] = (champion or {}).get("version")  # the registered version, for the metrics' info
    flush_traces()
    tracker.finish("FINISHED")
