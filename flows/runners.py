"""Task runners for the infer subflow: local threads, Ray (prefect-ray) or Dask (prefect-dask).

The scale-out extras are imported only when asked for, with a message that says how to install them.
"""
from __future__ import annotations

import os

from helios.errors import UsageError
from tasks.infer.config import InferConfig
from tasks.infer.model_ref import ModelRef

MAX_LOCAL_WORKERS = 4


def default_workers() -> int:
    """Shards in flight on one machine: one per core (up to 4). Measured on 2 cores: two shards with a
    one-thread session each beat one shard with a two-thread session by 25% (MNIST) — ORT's threads sync on
    every small GEMM, while independent runs keep both cores busy and hide each other's decoding."""
    return max(1, min(MAX_LOCAL_WORKERS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def concurrency(cfg: InferConfig) -> int:
    return cfg.workers or default_workers()


def split_threads(cfg: InferConfig, model: ModelRef) -> ModelRef:
    """Divide the session thread budget among the shards that run at once on this machine.

    On a cluster given by address the user sized the workers; their sessions keep ``model.intra_op_threads``.
    """
    if cfg.runner_address:
        return model
    budget = model.intra_op_threads or default_workers()
    threads = max(1, budget // concurrency(cfg))
    return model if threads == model.intra_op_threads else model.model_copy(update={"intra_op_threads": threads})


def runs_per_process(cfg: InferConfig) -> int:
    """ONNX Runtime runs in flight at once in one process, and inference threads per shard.

    Locally the shards share one process: as many runs as shards in flight, so a shard left alone (the last of a
    run) keeps every core busy. Ray and Dask workers are processes of their own, one shard each: one run.
    """
    return concurrency(cfg) if cfg.runner == "local" else 1


def make_task_runner(cfg: InferConfig):
    """The Prefect task runner for ``cfg.runner``; ``cfg.runner_address`` joins an existing cluster."""
    if cfg.runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=concurrency(cfg))
    if cfg.runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise UsageError("--runner ray needs prefect-ray and ray: pip install 'helios[scale]'") from exc
        if cfg.runner_address:
            return RayTaskRunner(address=cfg.runner_address)
        return RayTaskRunner(init_kwargs={"num_cpus": concurrency(cfg), "object_store_memory": 512 * 1024 * 1024,
                                          "include_dashboard": False})
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise UsageError("--runner dask needs prefect-dask and distributed: pip install 'helios[scale]'") from exc
    if cfg.runner_address:
        return DaskTaskRunner(address=cfg.runner_address)
    # processes, one thread each: one ONNX Runtime session per worker process
    return DaskTaskRunner(cluster_kwargs={"n_workers": concurrency(cfg), "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})
