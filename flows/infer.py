"""The infer subflow: plan shards from the manifest, run them on the task runner, commit, merge.

The pipeline flow picks the runner with ``infer_flow.with_options(task_runner=make_task_runner(cfg))``; the same
flow is deployed as ``helios-infer-gpu``, so every parameter is JSON-serializable.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import flow, get_run_logger
from prefect.futures import as_completed

from tasks.infer.config import InferConfig
from tasks.infer.index import RunIndex
from tasks.infer.metrics import serve_metrics
from tasks.infer.model_ref import ModelRef
from tasks.infer.plan import PREDICTIONS, load_reusable, merge_predictions, plan_shards
from tasks.infer.progress import ShardProgress
from tasks.infer.result import InferResult, count_rows
from tasks.infer.runners import make_task_runner, split_threads
from tasks.infer.scan import read_manifest
from tasks.infer.shard import ShardOutcome, ShardSettings, ShardSpec, failed_shard_table
from tasks.infer.task import infer_shard_task

__all__ = ["InferResult", "infer_flow", "make_task_runner", "resolve_batch_size"]


def resolve_batch_size(cfg: InferConfig, profile: dict) -> int:
    """``cfg.batch_size``, else the hardware recommendation for this profile."""
    if cfg.batch_size:
        return cfg.batch_size
    from hardware.profile import HardwareProfile
    from hardware.recommend import recommend

    return recommend(HardwareProfile.from_dict(profile)).batch_size


def count_reused(manifest: pa.Table, done: set[str]) -> int:
    """Manifest files whose result came from an earlier run."""
    if not done:
        return 0
    return pc.sum(pc.is_in(manifest["content_hash"], pa.array(list(done), pa.string()))).as_py() or 0


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


def run_shards(specs: list[ShardSpec], model: ModelRef, settings: ShardSettings, index: RunIndex, metrics,
               progress: ShardProgress) -> tuple[list[pa.Table], list[ShardOutcome]]:
    """Submit one task per shard; commit each durable shard file as its task returns (this process is the one
    index writer). A shard that exhausts its retries becomes error rows, and the run goes on."""
    log, tables, outcomes = get_run_logger(), [], []
    futures = {infer_shard_task.submit(spec, model, settings): spec for spec in specs}
    for future in as_completed(list(futures)):
        spec = futures[future]
        try:
            outcome = future.result()
        except Exception as exc:  # any failure of the task, after its retries
            log.error("shard %s failed after retries: %s", spec.shard_id, exc)
            tables.append(failed_shard_table(spec, f"shard failed after retries: {type(exc).__name__}: {exc}"))
            metrics.record_files("error", len(spec.hashes))
            progress.advance(len(spec.hashes))
            continue
        index.commit(spec.shard_id, model.identity, Path(outcome.out_path).name, outcome.files)
        tables.append(pq.read_table(outcome.out_path))
        outcomes.append(outcome)
        metrics.record_shard(outcome)
        progress.advance(outcome.files)
    return tables, outcomes


@flow(name="helios-infer", task_runner=make_task_runner(InferConfig()))
def infer_flow(cfg: InferConfig, model: ModelRef, manifest_path: str, run_dir: str, profile: dict) -> InferResult:
    """Infer every new or changed file of the manifest and write ``run_dir/predictions.parquet``."""
    start, run_path = time.perf_counter(), Path(run_dir)
    manifest, root = read_manifest(manifest_path)
    index = RunIndex(run_path)
    try:
        if cfg.full:
            index.supersede(model.identity)
        reusable = load_reusable(index, model.identity, run_path)
        done = set(reusable["content_hash"].to_pylist())
        specs = plan_shards(manifest, root, done, model.identity, cfg.shard_size, run_path)
        settings = ShardSettings(resolve_batch_size(cfg, profile), cfg.prefetch_batches, cfg.max_file_bytes)
        todo = sum(len(s.hashes) for s in specs)
        get_run_logger().info("%d files: %d to infer in %d shards, %d results reused",
                              manifest.num_rows, todo, len(specs), len(done))
        with serve_metrics(cfg.metrics_port, cfg.pushgateway, bool(profile.get("gpus")), {"run": run_path.name}) \
                as metrics, ShardProgress(todo, cfg.progress) as progress:
            with share_api_with_workers(cfg.runner):
                tables, outcomes = run_shards(specs, split_threads(cfg, model), settings, index, metrics, progress)
            table = merge_predictions(manifest, pa.concat_tables([reusable, *tables]), run_path / PREDICTIONS)
            reused = count_reused(manifest, done)
            metrics.record_files("reused", reused)
            metrics.record_files("error", manifest.num_rows - manifest["scan_error"].null_count)  # scan errors
    finally:
        index.close()
    counts, reasons = count_rows(table, reused)
    seconds = time.perf_counter() - start
    return InferResult(predictions_path=str(run_path / PREDICTIONS), counts=counts, errors_by_reason=reasons,
                       seconds=seconds, files_per_s=todo / max(seconds, 1e-9), throughput=progress.points,
                       batch_size=min([o.batch_size for o in outcomes], default=settings.batch_size),
                       worker_processes=len({o.pid for o in outcomes}),
                       model_loads=sum(o.loaded_model for o in outcomes))
