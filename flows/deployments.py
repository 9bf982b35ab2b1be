"""Prefect objects Helios needs on a server: work pools, the GPU concurrency limit, the shared result storage block.

Every function is idempotent: it creates what is missing, updates what differs, and says what it did. The names
here are the ones ``prefect.yaml`` and ``flows/dispatch.py`` use; a test checks that they agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CPU_POOL = "helios-cpu"
GPU_POOL = "helios-gpu"
GPU_LIMIT = "gpu"  # global concurrency limit: one slot per GPU the GPU workers have between them
RESULTS_BLOCK = "helios-results"  # local-file-system block on the volume every worker mounts
GPU_DEPLOYMENT = "helios-infer/helios-infer-gpu"
PIPELINE_DEPLOYMENT = "helios-pipeline/helios-pipeline"


@dataclass(frozen=True)
class PoolSpec:
    """What ``helios ops pools`` makes: GPU slots, and where flow results are persisted (as workers see it)."""

    gpu_slots: int = 1
    results_dir: Path = Path("helios-work/prefect-results")

    def __post_init__(self) -> None:
        if self.gpu_slots < 1:
            raise ValueError(f"--gpu-slots {self.gpu_slots}: pass the number of GPUs your GPU workers have, 1 or more")


def ensure_work_pool(client, name: str, description: str) -> str:
    """Create process work pool ``name`` unless it exists; a pool of another type is an error, not replaced."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(name=name, type="process", description=description,
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
        return f"created work pool {name} (process)"
    if pool.type != "process":
        raise ValueError(f"work pool {name!r} exists with type {pool.type!r}: Helios workers need a 'process' pool; "
                         f"delete it (prefect work-pool delete {name}) or pass another name")
    return f"work pool {name} exists (process)"


def ensure_concurrency_limit(client, name: str, slots: int) -> str:
    """Create global concurrency limit ``name`` with ``slots`` slots, or set its limit and activate it."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
        return f"created concurrency limit {name} ({slots} slots)"
    if limit.limit == slots and limit.active:
        return f"concurrency limit {name} exists ({slots} slots)"
    client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
    return f"concurrency limit {name} set to {slots} slots (was {limit.limit}{'' if limit.active else ', inactive'})"


def ensure_result_storage(name: str, results_dir: Path) -> str:
    """Save local-file-system block ``name`` at ``results_dir`` (absolute: every worker must see the same path)."""
    from prefect.filesystems import LocalFileSystem

    basepath = results_dir.expanduser().resolve()  # created by the first write, on whichever machine writes
    LocalFileSystem(basepath=str(basepath)).save(name, overwrite=True)
    return f"result storage local-file-system/{name} at {basepath}"


def ensure_all(spec: PoolSpec) -> list[str]:
    """Pools, GPU limit and result storage on the server PREFECT_API_URL names; one line per object."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ValueError("PREFECT_API_URL is not set: start a server (prefect server start) and "
                         "export PREFECT_API_URL=http://127.0.0.1:4200/api, or pass --api-url")
    with get_client(sync_client=True) as client:
        done = [
            ensure_work_pool(client, CPU_POOL, "Helios pipeline runs (CPU workers)"),
            ensure_work_pool(client, GPU_POOL, "Helios scan-and-infer stage on GPUs (one worker per GPU)"),
            ensure_concurrency_limit(client, GPU_LIMIT, spec.gpu_slots),
        ]
    done.append(ensure_result_storage(RESULTS_BLOCK, spec.results_dir))
    return done
