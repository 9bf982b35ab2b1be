"""The infer subflow: plan shards from the manifest, run them on the task runner, commit, merge.

The pipeline flow picks the runner with ``infer_flow.with_options(task_runner=make_task_runner(cfg))``; the same
flow is deployed as ``helios-infer-gpu``, so every parameter is JSON-serializable.
"""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger
from prefect.futures import as_completed

from tasks.infer.config import InferConfig
from tasks.infer.index import RunIndex
from tasks.infer.model_ref import ModelRef
from tasks.infer.plan import PREDICTIONS, load_reusable, merge_predictions, plan_shards
from tasks.infer.progress import ShardProgress
from tasks.infer.result import InferResult, count_rows
from tasks.infer.runners import make_task_runner
from tasks.infer.scan import read_manifest
from tasks.infer.shard import ShardSettings, failed_shard_table
from tasks.infer.task import infer_shard_task

__all__ = ["InferResult", "infer_flow", "resolve_batch_size"]


def resolve_batch_size(cfg: InferConfig, profile: dict) -> int:
    """``cfg.batch_size``, else the hardware recommendation for this profile."""
    if cfg.batch_size:
        return cfg.batch_size
    from hardware.profile import HardwareProfile
    from hardware.recommend import recommend

    return recommend(HardwareProfile.from_dict(profile)).batch_size


@flow(name="helios-infer", task_runner=make_task_runner(InferConfig()))
def infer_flow(cfg: InferConfig, model: ModelRef, manifest_path: str, run_dir: str, profile: dict) -> InferResult:
    """Infer every new or changed file of the manifest and write ``run_dir/predictions.parquet``."""
    start, run_path, log = time.perf_counter(), Path(run_dir), get_run_logger()
    manifest, root = read_manifest(manifest_path)
    index = RunIndex(run_path)
    try:
        if cfg.full:
            index.supersede(model.identity)
        reusable = load_reusable(index, model.identity, run_path)
        done = set(reusable["content_hash"].to_pylist())
        specs = plan_shards(manifest, root, done, model.identity, cfg.shard_size, run_path)
        settings = ShardSettings(resolve_batch_size(cfg, profile), cfg.prefetch_batches, cfg.max_file_bytes)
        log.info("%d files: %d shards to infer, %d results reused", manifest.num_rows, len(specs), len(done))
        tables, batch_size = [reusable], settings.batch_size
        with ShardProgress(sum(len(s.hashes) for s in specs), cfg.progress) as progress:
            futures = {infer_shard_task.submit(spec, model, settings): spec for spec in specs}
            for future in as_completed(list(futures)):
                spec = futures[future]
                try:
                    outcome = future.result()
                except Exception as exc:  # the task exhausted its retries; its files get error rows, the run goes on
                    log.error("shard %s failed after retries: %s", spec.shard_id, exc)
                    tables.append(failed_shard_table(spec, f"shard failed after retries: {type(exc).__name__}: {exc}"))
                    progress.advance(len(spec.hashes))
                    continue
                index.commit(spec.shard_id, model.identity, Path(outcome.out_path).name, outcome.files)
                tables.append(pq.read_table(outcome.out_path))
                batch_size = min(batch_size, outcome.batch_size)
                progress.advance(outcome.files)
        table = merge_predictions(manifest, pa.concat_tables(tables), run_path / PREDICTIONS)
    finally:
        index.close()
    hashes = pa.array(list(done), pa.string())
    reused = sum(1 for flag in pa.compute.is_in(manifest["content_hash"], hashes).to_pylist() if flag) if done else 0
    counts, reasons = count_rows(table, reused)
    seconds = time.perf_counter() - start
    processed = sum(len(s.hashes) for s in specs)
    return InferResult(predictions_path=str(run_path / PREDICTIONS), counts=counts, errors_by_reason=reasons,
                       seconds=seconds, files_per_s=processed / max(seconds, 1e-9), throughput=progress.points,
                       batch_size=batch_size)
