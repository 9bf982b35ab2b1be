"""The infer subflow: plan shards from the manifest, run them on the task runner, commit, merge.

The pipeline flow picks the runner with ``infer_flow.with_options(task_runner=make_task_runner(cfg))``; so does the
GPU deployment's flow (``flows/gpu_stages.py``), which passes JSON parameters through, so every one is serializable.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import flow, get_run_logger
from prefect.futures import as_completed

from flows.deployments import check_deployment_parameters, code_running_settings, running_deployment_id
from helios.catalog import RunCatalog
from tasks.infer.config import InferConfig
from tasks.infer.index import RunIndex
from tasks.infer.metrics import serve_metrics
from tasks.infer.model_ref import ModelRef
from tasks.infer.outputs import VectorSource, locate, read_located, vector_columns, vectors_summary
from tasks.infer.plan import load_reusable, load_reusable_located, merge_predictions, plan_todo, write_shards
from flows.progress import ShardProgress
from tasks.infer.result import InferResult
from flows.runners import concurrency, make_task_runner, runs_per_process, split_threads
from tasks.infer.scan import read_manifest, system_memory_pool
from tasks.infer.shard import RESULT_SCHEMA, ShardOutcome, ShardSettings, ShardSpec, failed_shard_table
from tasks.infer.task import infer_shard_task
from tasks.infer.workers import ShardWorkers, WorkerDied

__all__ = ["InferResult", "infer_flow", "make_task_runner", "resolve_batch_size"]

RESULT_COLUMNS = [name for name in RESULT_SCHEMA.names if name != "reusable"]  # what the merge reads


def resolve_batch_size(cfg: InferConfig, profile: dict) -> int:
    """``cfg.batch_size``, else the hardware recommendation for this profile."""
    if cfg.batch_size:
        return cfg.batch_size
    from hardware.profile import HardwareProfile
    from hardware.recommend import recommend

    return recommend(HardwareProfile.from_dict(profile)).batch_size


def gather_results(reusable: pa.Table, parts: list[str | pa.Table]) -> pa.Table:
    """Reused rows plus this run's shard files (and the error tables of failed shards), one row per hash, as
    one contiguous table without the ``reusable`` column: the merge then makes no second copy of it."""
    tables = [p if isinstance(p, pa.Table) else pq.read_table(p, columns=RESULT_COLUMNS) for p in parts]
    return pa.concat_tables([reusable.select(RESULT_COLUMNS), *(t.select(RESULT_COLUMNS) for t in tables)]) \
        .combine_chunks()


def gather_located(reusable: pa.Table, files: list[str], parts: list[str | pa.Table]) -> tuple[pa.Table, list[str]]:
    """As ``gather_results``, keeping where each row lies (``_file`` in the returned files, ``_row``) instead of
    its vectors: the merge reads those a chunk at a time."""
    columns = [*RESULT_COLUMNS, "_file", "_row"]
    paths = [p for p in parts if not isinstance(p, pa.Table)]
    tables = [reusable.select(columns), *(t.select(columns) for t in read_located(paths, RESULT_COLUMNS, len(files)))]
    tables += [locate(p.select(RESULT_COLUMNS), -1) for p in parts if isinstance(p, pa.Table)]
    return pa.concat_tables(tables).combine_chunks(), [*files, *paths]


def with_outputs(model: ModelRef, cfg: InferConfig) -> ModelRef:
    """The model handle whose identity also names the outputs asked for: shard files hold those columns, so results
    of a run with other outputs are not reused (the default, ``[label]``, keeps the model's identity)."""
    if tuple(cfg.outputs) == ("label",):
        return model
    key = f"{model.identity}|{','.join(sorted(set(cfg.outputs)))}|{cfg.top_k if 'topk' in cfg.outputs else ''}"
    import hashlib

    return model.model_copy(update={"identity": hashlib.sha256(key.encode()).hexdigest()[:32]})


def check_outputs(cfg: InferConfig, model: ModelRef) -> None:
    """``embeddings`` needs a graph that outputs them: fail before any shard runs, naming the fix."""
    if "embeddings" not in cfg.outputs:
        return
    import onnx

    names = [o.name for o in onnx.load(model.onnx_path, load_external_data=False).graph.output]
    if "embeddings" not in names:
        from helios.errors import UsageError

        raise UsageError(f"infer.outputs has embeddings, but model {model.model.name!r} exposes no pooled features "
                         f"(its outputs: {', '.join(names)}): remove embeddings from infer.outputs")


def count_reused(manifest: pa.Table, done: pa.Array) -> int:
    """Manifest files whose result came from an earlier run."""
    if not len(done):
        return 0
    return pc.sum(pc.is_in(manifest["content_hash"], done)).as_py() or 0


@contextmanager
def share_api_with_workers(runner: str):
    """Ray/Dask worker processes report task states to the Prefect API. Under a temporary local server the URL
    lives only in this process's client, and each worker would start a server of its own (seconds each): put the
    URL into the settings that Prefect serializes into every submitted task."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if runner == "local" or PREFECT_API_URL.value():
        yield
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    with temporary_settings({PREFECT_API_URL: url}):
        yield


@dataclass
class ShardJob:
    """How this run submits a shard: the task with ``retries``, the model, the settings, the worker processes."""

    model: ModelRef
    settings: ShardSettings
    retries: int
    workers: ShardWorkers | None = None

    def submit(self, spec: ShardSpec):
        """The shard task's future (in a worker process of ``workers`` when given)."""
        return infer_shard_task.with_options(retries=self.retries).submit(spec, self.model, self.settings,
                                                                           self.workers)


def failure_reason(exc: BaseException, retries: int) -> str:
    """The error rows' text for a shard that failed ``retries + 1`` times; it names the last failure."""
    if isinstance(exc, WorkerDied):
        return f"{exc} — retried {retries} time{'' if retries == 1 else 's'}"
    return f"shard failed after retries: {type(exc).__name__}: {exc}"


def run_shards(specs: list[ShardSpec], window: int, job: ShardJob, index: RunIndex, metrics,
               progress: ShardProgress) -> tuple[list[str | pa.Table], list[ShardOutcome]]:
    """Keep ``window`` shard tasks in flight, submitting the next as one finishes (backpressure: the flow never
    holds more shards than that); commit each durable shard file as its task returns (this process is the one
    index writer). A shard that exhausts its retries becomes error rows, and the run goes on."""
    log, tables, outcomes, running, queue = get_run_logger(), [], [], {}, iter(specs)

    def submit_next() -> None:
        spec = next(queue, None)
        if spec is not None:
            running[job.submit(spec)] = spec

    for _ in range(window):
        submit_next()
    while running:
        future = next(as_completed(list(running)))
        spec = running.pop(future)
        submit_next()
        try:
            outcome = future.result()
        except Exception as exc:  # any failure of the task, after its retries
            log.error("shard %s failed after %d retries: %s", spec.shard_id, job.retries, exc)
            tables.append(failed_shard_table(spec, failure_reason(exc, job.retries)))
            metrics.record_files("error", spec.files)
            progress.advance(spec.files)
            continue
        index.commit(spec.shard_id, job.model.identity, Path(outcome.out_path).name, outcome.files)
        tables.append(outcome.out_path)  # read back at the merge: nothing per file is held during the run
        outcomes.append(outcome)
        metrics.record_shard(outcome)
        progress.advance(outcome.files)
    return tables, outcomes


@contextmanager
def shard_workers(cfg: InferConfig, run_path: Path, shards: int) -> Iterator[ShardWorkers | None]:
    """Worker processes for this run's local shards (``infer.isolation=process``); None: the shards run in the
    flow's threads, on Ray or Dask (processes of their own already), or there is no shard to run."""
    if cfg.runner != "local" or cfg.isolation != "process" or not shards:
        yield None
        return
    with ShardWorkers(min(concurrency(cfg), shards), RunCatalog(run_path).workers) as workers:
        yield workers


@flow(name="helios-infer", task_runner=make_task_runner(InferConfig()))
def infer_flow(cfg: InferConfig, model: ModelRef, manifest_path: str, run_dir: str,
               profile: dict | None = None) -> InferResult:
    """Infer every new or changed file of the manifest and write ``run_dir/predictions.parquet``.

    ``profile`` is the HardwareProfile (as a dict) of the machine this runs on; None: detect it here. Run from a
    deployment (``helios-infer-gpu``), a model that runs code is refused unless this worker opted in.
    """
    refuse_deployment_code(model)
    with system_memory_pool():  # peak memory follows the live data, not what mimalloc keeps after each phase
        return _infer(cfg, model, manifest_path, run_dir, profile)


def refuse_deployment_code(model: ModelRef, deployment_id: Callable[[], str | None] = running_deployment_id) -> None:
    """The guard of ``flows.deployments`` on this flow's own parameters: the GPU deployment's ``model`` can name
    ``module:factory`` or set ``allow_pickle`` as the pipeline's can. The deployment is looked up (an API call
    outside a deployment) only when the model would run code."""
    if code_running_settings(model.model.name, model.model.allow_pickle):
        check_deployment_parameters(model.model, deployment_id())


def plan_run(cfg: InferConfig, model: ModelRef, manifest_path: str, run_path: Path,
             index: RunIndex) -> tuple[list[ShardSpec], pa.Table, dict[str, int]]:
    """This run's shards, the results it reuses, and its file tally (todo, reused, scan_errors; with vector
    outputs, ``files``: the shard files the reused rows lie in)."""
    manifest, root = read_manifest(manifest_path, columns=["content_hash", "fs_path", "scan_error"])
    if cfg.full:
        index.supersede(model.identity)
    files: list[str] = []
    if vector_columns(cfg.outputs):
        reusable, files = load_reusable_located(index, model.identity, run_path)
    else:
        reusable = load_reusable(index, model.identity, run_path)
    done = reusable["content_hash"].combine_chunks()
    specs = write_shards(plan_todo(manifest, done), root, model.identity, cfg.shard_size, run_path)
    tally = {"todo": sum(s.files for s in specs), "reused": count_reused(manifest, done),
             "scan_errors": manifest.num_rows - manifest["scan_error"].null_count, "files": files}
    get_run_logger().info("%d files: %d to infer in %d shards, %d reused, %d scan errors",
                          manifest.num_rows, tally["todo"], len(specs), tally["reused"], tally["scan_errors"])
    return specs, reusable, tally  # the manifest is freed here: the merge streams it again from disk


def _infer(cfg: InferConfig, model: ModelRef, manifest_path: str, run_dir: str, profile: dict | None) -> InferResult:
    start, run_path = time.perf_counter(), Path(run_dir)
    if profile is None:
        from hardware import detect

        profile = detect(io_probe_seconds=0).to_dict()
    check_outputs(cfg, model)
    model = with_outputs(model, cfg)
    index = RunIndex(run_path)
    try:
        specs, reusable, tally = plan_run(cfg, model, manifest_path, run_path, index)
        pa.default_memory_pool().release_unused()
        settings = ShardSettings(resolve_batch_size(cfg, profile), cfg.prefetch_batches, cfg.max_file_bytes,
                                 runs_per_process(cfg), tuple(cfg.outputs), cfg.top_k)
        with serve_metrics(cfg.metrics_port, cfg.pushgateway, bool(profile.get("gpus")), {"run": run_path.name}) \
                as metrics, ShardProgress(tally["todo"], cfg.progress) as progress:
            with share_api_with_workers(cfg.runner), shard_workers(cfg, run_path, len(specs)) as workers:
                job = ShardJob(split_threads(cfg, model), settings, cfg.shard_retries, workers)
                tables, outcomes = run_shards(specs, 2 * concurrency(cfg), job, index, metrics, progress)
                deaths = list(workers.deaths) if workers else []
            metrics.record_files("reused", tally["reused"])
            metrics.record_files("error", tally["scan_errors"])
            vectors = None
            if vector_columns(cfg.outputs):
                results, files = gather_located(reusable, tally["files"], tables)
                vectors = VectorSource(files, vector_columns(cfg.outputs))
            else:
                results = gather_results(reusable, tables)
            del reusable, tables  # the merge holds the one contiguous copy
            summary = merge_predictions(manifest_path, results, RunCatalog(run_path).predictions, vectors=vectors)
            del results
            pa.default_memory_pool().release_unused()
    finally:
        index.close()
    if deaths:
        get_run_logger().warning("%d shard worker process(es) died: %s", len(deaths), "; ".join(deaths))
    seconds = time.perf_counter() - start
    return InferResult(predictions_path=str(RunCatalog(run_path).predictions),
                       counts={**summary.counts(tally["reused"]), "worker_deaths": len(deaths)},
                       errors_by_reason=dict(summary.reasons.most_common()), seconds=seconds,
                       files_per_s=tally["todo"] / max(seconds, 1e-9), throughput=progress.points,
                       batch_size=min([o.batch_size for o in outcomes], default=settings.batch_size),
                       worker_processes=len({o.pid for o in outcomes}),
                       model_loads=sum(o.loaded_model for o in outcomes), worker_deaths=deaths,
                       outputs=vectors_summary(str(RunCatalog(run_path).predictions), tuple(cfg.outputs), cfg.top_k))
