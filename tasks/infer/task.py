"""Prefect wrappers of the scan and shard cores: a few lines each."""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.infer.model_ref import ModelRef
from tasks.infer.scan import ScanResult, scan_input
from tasks.infer.table import TableSpec
from tasks.infer.shard import ShardOutcome, ShardSettings, ShardSpec, infer_shard
from tasks.infer.workers import ShardWorkers


@task(name="scan-input", cache_policy=NO_CACHE)
def scan_stage(root: str, run_dir: str, table: TableSpec | None = None) -> ScanResult:
    """Walk and hash the input into ``run_dir/manifest.parquet`` (deterministic: no retries); tables' rows are
    items when ``table.column`` is set."""
    return scan_input(root, Path(run_dir), table)


@task(retries=2, retry_delay_seconds=1, name="infer-shard", cache_policy=NO_CACHE)
def infer_shard_task(spec: ShardSpec, ref: ModelRef, settings: ShardSettings,
                     workers: ShardWorkers | None = None) -> ShardOutcome:
    """One shard on whichever worker the task runner picks (in a process of ``workers`` when given); retried if
    the worker or the run fails (``with_options(retries=...)``: the infer.shard_retries setting)."""
    if workers is not None:
        return workers.run(spec, ref, settings)
    return infer_shard(spec, ref, settings)
