"""Prefect objects Helios needs on a server: work pools, the GPU concurrency limit, the shared result storage block.

Every function is idempotent: it creates what is missing, updates what differs, and says what it did. The names
here are the ones ``prefect.yaml`` and ``flows/dispatch.py`` use; a test checks that they agree.
"""
from __future__ import annotations

import os
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


# --- what a worker does before and at the start of a deployment's flow run

CODE_OPT_IN = "HELIOS_ALLOW_DEPLOYMENT_CODE"  # worker env or job variable: "1" lets parameters run code on it


def helios_home() -> Path:
    """The Helios checkout a worker runs: ``$HELIOS_HOME``, else the checkout or installation these modules come
    from (for a process worker started from the checkout, that is the checkout itself)."""
    configured = os.environ.get("HELIOS_HOME")
    return Path(configured) if configured else Path(__file__).resolve().parents[1]


def home_problem(home: Path) -> str | None:
    """Why ``home`` cannot serve the deployments (None when it can): it must hold flows/pipeline.py."""
    if not (home / "flows" / "pipeline.py").is_file():
        return (f"HELIOS_HOME={home} does not hold Helios (no flows/pipeline.py): set HELIOS_HOME to the Helios "
                "checkout the worker runs, e.g. `export HELIOS_HOME=/opt/helios` (the worker images set it)")
    return None


def enter_helios_home() -> dict:
    """Prefect pull step (prefect.yaml): change into the Helios checkout; one line naming HELIOS_HOME if it is wrong.

    Relative run directories in deployment parameters (``out: helios-work/...``) resolve against it."""
    home = helios_home()
    problem = home_problem(home)
    if problem:
        raise RuntimeError(problem)
    os.chdir(home)
    return {"directory": str(home)}


def code_running_settings(model_name: str, allow_pickle: bool) -> list[str]:
    """The settings of a run that execute code on the machine: ``module:factory`` imports and runs a module, and
    ``model.allow_pickle`` unpickles a checkpoint."""
    from helios.models import is_factory

    found = [f"model.name={model_name!r} (module:factory imports and runs code)"] if is_factory(model_name) else []
    return found + (["model.allow_pickle=true (unpickling runs code)"] if allow_pickle else [])


def running_deployment_id() -> str | None:
    """The deployment the current flow run was started from (None: started directly, e.g. by the CLI)."""
    from prefect.runtime import deployment

    return deployment.id


def check_deployment_parameters(model, deployment_id: str | None) -> None:
    """Anyone who can reach the Prefect API can set a deployment's parameters: a flow run started from a
    deployment may run code (``model``: a ModelConfig) only on a worker that opted in (``HELIOS_ALLOW_DEPLOYMENT_CODE=1``). The CLI is not
    affected (the user runs their own code there)."""
    risky = code_running_settings(model.name, model.allow_pickle)
    if deployment_id is None or not risky or os.environ.get(CODE_OPT_IN) == "1":
        return
    from helios.errors import UsageError

    raise UsageError(f"deployment parameters ask for {' and '.join(risky)}, which this worker does not allow: set "
                     f"{CODE_OPT_IN}=1 in the worker's environment or the work pool's job variables to opt in")
