"""System metrics on a pipeline run: MLflow's own monitor (CPU, memory, disk, network; NVIDIA/AMD GPUs where
present) sampling in a thread and logging ``system/*`` metrics to the run by its explicit id."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def start_system_metrics(run_id: str, tracking_uri: str, interval_s: float | None) -> Any:
    """A started ``SystemMetricsMonitor`` on ``run_id`` sampling every ``interval_s`` seconds; None when off."""
    if interval_s is None:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, tracking_uri=tracking_uri)
    monitor.start()
    return monitor


def stop_system_metrics(monitor: Any) -> None:
    """Stop sampling, log one last sample (a run shorter than the interval gets one too) and flush."""
    if monitor is None:
        return
    monitor.finish()
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()
