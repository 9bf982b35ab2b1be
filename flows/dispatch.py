"""Where the model is built and run: here (the infer stage as a subflow), or on the GPU work pool.

With ``infer.pool: gpu`` the pipeline takes a slot of the ``gpu`` global concurrency limit, starts the
``helios-infer/helios-infer-gpu`` deployment (``flows/gpu_stages.py``) with ``run_deployment`` and waits for it. The
GPU worker prepares, optimizes and infers for its own hardware (``build_and_infer_on_gpu``), or only infers a
registered version it is given (``run_infer_stage``); it writes the variants and ``predictions.parquet`` into the run
directory and persists the flow's return value to the ``helios-results`` local-file-system block. Both live on the
volume every worker mounts at the same path, so this process reads the GpuStagesResult back from the finished flow
run's state.

A GPU run that has not finished when the wait times out is cancelled before the slot is given back: a run the worker
has not started is set Cancelled; a started one is set Cancelling, its worker stops the process and reports
Cancelled, and only then (or after ``CANCEL_WAIT_S``) is the slot released, so the next pipeline never shares the GPU
with an orphaned run.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from flows.gpu_stages import GpuStagesResult, ModelBuild
from flows.infer import infer_flow
from helios.errors import UsageError
from flows.deployments import GPU_DEPLOYMENT, GPU_LIMIT
from tasks.infer.config import InferConfig
from tasks.infer.model_ref import ModelRef
from tasks.infer.result import InferResult
from flows.runners import make_task_runner

log = logging.getLogger(__name__)

GPU_TIMEOUT_S = 6 * 3600.0  # waiting for a GPU slot, and then for the run, each at most this long
POLL_S = 2.0  # how often run_deployment asks the server whether the GPU run has finished
CANCEL_WAIT_S = 120.0  # how long a timed-out GPU run's worker gets to stop it and report Cancelled
# ORT's int8 kernels (DynamicQuantizeMatMul, QAttention, QLinearConv) are CPU kernels: under the CUDA EP they run on the
# CPU with copies in between, so a variant selected for its int8 speed on a CPU is the wrong one for a GPU.
CPU_ONLY_VARIANTS = ("int8-dynamic", "int8-static")

__all__ = ["GpuStageError", "build_and_infer_on_gpu", "build_parameters", "cancel_flow_run", "gpu_parameters",
           "gpu_result_of", "run_infer_stage", "variant_for_pool"]


class GpuStageError(RuntimeError):
    """The GPU run of the infer stage did not complete, or left no result this process can read."""


def run_infer_stage(cfg: InferConfig, model_ref: ModelRef, manifest_path: str, run_dir: str, profile: dict,
                    batch_size: int | None = None, timeout_s: float = GPU_TIMEOUT_S) -> InferResult:
    """Infer the manifest: as a subflow on ``cfg.runner`` (pool ``local``) or on the GPU pool (pool ``gpu``).

    ``batch_size`` is this machine's recommendation (from the detect stage), used when ``cfg.batch_size`` is unset;
    a GPU worker is another machine and recommends its own. The pipeline sends a model to the GPU pool this way only
    for a registered version it was given (``models:/``); otherwise the worker builds its own
    (``build_and_infer_on_gpu``).
    """
    if cfg.pool == "local":
        if batch_size and not cfg.batch_size:
            cfg = cfg.model_copy(update={"batch_size": batch_size})
        infer = infer_flow.with_options(task_runner=make_task_runner(cfg))
        with nested_without_heartbeats():
            return infer(cfg, model_ref, manifest_path, run_dir, profile)
    return dispatch_to_gpu(gpu_parameters(cfg, model_ref, manifest_path, run_dir), timeout_s).infer


@contextmanager
def nested_without_heartbeats():
    """Inside a flow run, the subflows started here send no heartbeats of their own.

    Prefect 3 sends a flow run's heartbeats from a thread that sleeps in one-second steps, and a synchronous run
    waits for that thread when it ends: up to a second per subflow (0.5 s on average, measured), and the refine stage
    runs several short infer subflows. A subflow runs in its parent's process, so the parent's heartbeats already say
    whether that process is alive; a top-level flow (no parent) keeps its own."""
    from prefect.context import FlowRunContext
    from prefect.settings import temporary_settings

    if FlowRunContext.get() is None:
        yield
        return
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def build_and_infer_on_gpu(cfg: InferConfig, build: ModelBuild, manifest_path: str, run_dir: str,
                           timeout_s: float = GPU_TIMEOUT_S) -> GpuStagesResult:
    """Prepare, optimize and infer on the GPU pool, for the GPU worker's own hardware (``flows/gpu_stages.py``)."""
    return dispatch_to_gpu(build_parameters(cfg, build, manifest_path, run_dir), timeout_s)


def variant_for_pool(optimized, pool: str):
    """The variant the infer stage runs: the selected one, except that the GPU pool never gets a CPU-only (int8)
    variant; it gets the lossless fp32 variant (ORT optimizes it for the CUDA EP when it opens it). The pipeline
    needs this only for a registered version (``models:/``) sent to the GPU pool: it builds nothing for the GPU
    itself. A reused int8 version with no fp32 beside it is sent as it is, with a warning."""
    chosen = optimized.selected
    if pool != "gpu" or chosen.name not in CPU_ONLY_VARIANTS:
        return chosen
    fp32 = next((v for v in optimized.variants if v.name == "fp32" and not v.error), None)
    if fp32 is None:
        log.warning("the GPU pool gets %s, a CPU-only variant (no fp32 variant to send instead)", chosen.name)
        return chosen
    log.info("the GPU pool gets fp32, not %s (selected for this CPU; its int8 kernels do not run on CUDA)", chosen.name)
    return fp32


def gpu_parameters(cfg: InferConfig, model_ref: ModelRef, manifest_path: str, run_dir: str) -> dict:
    """The deployment's JSON parameters to infer ``model_ref``: CUDA first (that is what the pool is for). The GPU
    worker is another machine: it detects its own hardware (batch size, GPU metrics)."""
    providers = ("CUDAExecutionProvider", *(p for p in model_ref.providers if p != "CUDAExecutionProvider"))
    return {"cfg": worker_config(cfg), "model": model_ref.model_copy(update={"providers": providers}).model_dump(
        mode="json"), "manifest_path": manifest_path, "run_dir": run_dir}


def build_parameters(cfg: InferConfig, build: ModelBuild, manifest_path: str, run_dir: str) -> dict:
    """The deployment's JSON parameters to build the model on the worker, then infer with it."""
    return {"cfg": worker_config(cfg), "build": build.model_dump(mode="json"), "manifest_path": manifest_path,
            "run_dir": run_dir}


def worker_config(cfg: InferConfig) -> dict:
    """``cfg`` as the worker runs it: its infer stage is local there, with no progress bar."""
    return cfg.model_copy(update={"pool": "local", "progress": False}).model_dump(mode="json")


def dispatch_to_gpu(parameters: dict, timeout_s: float) -> GpuStagesResult:
    """Hold a ``gpu`` slot while the deployment runs; return its GpuStagesResult."""
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError  # not re-exported by prefect.concurrency
    from prefect.concurrency.sync import concurrency
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    # strict: a missing limit is a setup error, not "no limit"; a lease renewal hiccup must not kill a long GPU run
    slot = concurrency(GPU_LIMIT, occupy=1, strict=True, timeout_seconds=timeout_s, raise_on_lease_renewal_failure=False)
    timed_out = False
    try:
        with slot:
            log.info("GPU slot taken; starting %s", GPU_DEPLOYMENT)
            flow_run = run_deployment(GPU_DEPLOYMENT, parameters=parameters, timeout=timeout_s, poll_interval=POLL_S)
            timed_out = flow_run.state is None or not flow_run.state.is_final()
            if timed_out:  # stop it before the slot goes, so the next run never shares the GPU with it
                flow_run = cancel_flow_run(flow_run.id, f"no result after {timeout_s:.0f} s: cancelled by the pipeline")
    except ObjectNotFound as exc:
        raise UsageError(f"deployment {GPU_DEPLOYMENT} not found on the Prefect server: run `prefect deploy --all` "
                         "from the Helios checkout, or set infer.pool=local") from exc
    except TimeoutError as exc:  # only the slot wait raises it; run_deployment returns the unfinished run instead
        raise GpuStageError(f"no slot of concurrency limit {GPU_LIMIT!r} freed up in {timeout_s:.0f} s: "
                            "check the GPU workers (prefect work-pool inspect helios-gpu)") from exc
    except ConcurrencySlotAcquisitionError as exc:
        if "must be created" in str(exc):
            raise UsageError(f"concurrency limit {GPU_LIMIT!r} is missing on the Prefect server: run "
                             "`helios ops pools`, or set infer.pool=local") from exc
        raise GpuStageError(f"could not take a slot of concurrency limit {GPU_LIMIT!r}: {exc}") from exc
    if timed_out and flow_run.state is not None and flow_run.state.is_cancelled():
        raise GpuStageError(f"GPU infer run {flow_run.name} ({flow_run.id}) gave no result in {timeout_s:.0f} s: "
                            "cancelled by the pipeline, then its GPU slot was released; its logs are in the Prefect UI")
    return gpu_result_of(flow_run, timeout_s)


def cancel_flow_run(flow_run_id, message: str, wait_s: float = CANCEL_WAIT_S):
    """Cancel an unfinished flow run and wait (at most ``wait_s``) until it is final; return it as last read.

    Scheduled (no worker has it): set Cancelled at once. Pending or Running: set Cancelling, which its worker acts on
    by stopping the run's process and setting Cancelled."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        waiting = run.state is None or run.state.is_scheduled()
        client.set_flow_run_state(flow_run_id, Cancelled(message=message) if waiting else Cancelling(message=message),
                                  force=True)
        log.warning("GPU run %s (%s): %s", run.name, flow_run_id, message)
        deadline = time.monotonic() + wait_s
        while not (run := client.read_flow_run(flow_run_id)).state.is_final() and time.monotonic() < deadline:
            time.sleep(min(POLL_S, 0.5))
        return run


def gpu_result_of(flow_run, timeout_s: float = GPU_TIMEOUT_S) -> GpuStagesResult:
    """The GpuStagesResult of a finished GPU run, read from the result storage it was persisted to."""
    from prefect.exceptions import MissingResult

    state, name = flow_run.state, f"{flow_run.name} ({flow_run.id})"
    if state is None or not state.is_final():
        raise GpuStageError(f"GPU infer run {name} is still {state.name if state else 'unscheduled'} after "
                            f"{timeout_s:.0f} s and did not confirm its cancellation: is a worker polling pool "
                            "helios-gpu? (prefect worker start --pool helios-gpu)")
    if not state.is_completed():
        raise GpuStageError(f"GPU infer run {name} ended {state.name}: {state.message or 'no message'}; "
                            "its logs are in the Prefect UI")
    try:
        value = state.result(raise_on_failure=True)
    except MissingResult as exc:
        raise GpuStageError(f"GPU infer run {name} completed but left no readable result: run the helios-infer-gpu "
                            "deployment with PREFECT_RESULTS_PERSIST_BY_DEFAULT=true and result storage every worker "
                            "can read (prefect.yaml job_variables; `helios ops pools` makes the block)") from exc
    except (OSError, ValueError) as exc:
        raise GpuStageError(f"GPU infer run {name} persisted its result where this worker cannot read it ({exc}): "
                            "mount the shared volume at the same path on CPU and GPU workers") from exc
    return value if isinstance(value, GpuStagesResult) else GpuStagesResult.model_validate(value)
