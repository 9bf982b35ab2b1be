"""Task runners for the infer subflow: local threads, Ray (prefect-ray) or Dask (prefect-dask).

The scale-out extras are imported only when asked for, with a message that says how to install them.
"""
from __future__ import annotations

from helios.errors import UsageError
from tasks.infer.config import InferConfig

LOCAL_WORKERS = 1  # one shard at a time: each shard already overlaps decoding with ORT's own threads


def make_task_runner(cfg: InferConfig):
    """The Prefect task runner for ``cfg.runner``; ``cfg.runner_address`` joins an existing cluster."""
    if cfg.runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.workers or LOCAL_WORKERS)
    if cfg.runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise UsageError("--runner ray needs prefect-ray and ray: pip install 'helios[scale]'") from exc
        if cfg.runner_address:
            return RayTaskRunner(address=cfg.runner_address)
        init = {"num_cpus": cfg.workers} if cfg.workers else {}
        return RayTaskRunner(init_kwargs={**init, "object_store_memory": 512 * 1024 * 1024,
                                          "include_dashboard": False})
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise UsageError("--runner dask needs prefect-dask and distributed: pip install 'helios[scale]'") from exc
    if cfg.runner_address:
        return DaskTaskRunner(address=cfg.runner_address)
    # processes, one thread each: one ONNX Runtime session per worker process
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers or 2, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})
