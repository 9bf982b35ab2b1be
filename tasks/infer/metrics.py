"""Prometheus metrics of an infer run: served on 127.0.0.1 during the run, pushed to a Pushgateway at the end.

Shard outcomes carry their per-batch timings back to the flow process, which records them here; that way the
numbers are the same whether shards ran in local threads or on Ray/Dask workers in other processes.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server

log = logging.getLogger(__name__)

# Batches of small models take milliseconds; big text batches up to seconds.
BATCH_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
PUSH_JOB = "helios_infer"


class RunMetrics:
    """One registry per run, so two runs in one process never collide."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.files = Counter("helios_files_processed", "Files finished, by status (ok, error, reused).",
                             ["status"], registry=r)
        self.batch_seconds = Histogram("helios_inference_batch_seconds", "ONNX Runtime time per batch.",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.batch_size = Gauge("helios_batch_size", "Files in the latest batch.", registry=r)
        self.queue_depth = Gauge("helios_queue_depth", "Decoded batches waiting in the prefetch queue.", registry=r)
        self.gpu_util = Gauge("helios_gpu_utilization_percent", "GPU utilization (NVML).", ["gpu"], registry=r)
        self.gpu_mem = Gauge("helios_gpu_memory_used_bytes", "GPU memory in use (NVML).", ["gpu"], registry=r)
        for status in ("ok", "error", "reused"):
            self.files.labels(status).inc(0)

    def record_shard(self, outcome) -> None:
        """Fold one ShardOutcome into the metrics."""
        self.files.labels("ok").inc(outcome.ok)
        self.files.labels("error").inc(outcome.error)
        for seconds in outcome.batch_seconds:
            self.batch_seconds.observe(seconds)
        if outcome.batch_sizes:
            self.batch_size.set(outcome.batch_sizes[-1])
        if outcome.queue_depths:
            self.queue_depth.set(outcome.queue_depths[-1])

    def record_files(self, status: str, n: int) -> None:
        self.files.labels(status).inc(n)


def _sample_gpus(metrics: RunMetrics, stop: threading.Event, every_s: float = 1.0) -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.warning("GPU metrics off: NVML not available (%s)", exc)
        return
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        while not stop.wait(every_s):
            for i, h in enumerate(handles):
                metrics.gpu_util.labels(str(i)).set(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
                metrics.gpu_mem.labels(str(i)).set(pynvml.nvmlDeviceGetMemoryInfo(h).used)
    finally:
        pynvml.nvmlShutdown()


@contextmanager
def serve_metrics(port: int | None, pushgateway: str | None, gpu: bool = False,
                  grouping: dict[str, str] | None = None) -> Iterator[RunMetrics]:
    """Metrics for one run: an HTTP endpoint on 127.0.0.1:``port`` while it lasts, a push at the end."""
    metrics = RunMetrics()
    server = None
    if port is not None:
        try:
            server, _ = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
        except OSError as exc:
            from helios.errors import UsageError

            raise UsageError(f"--metrics-port {port} cannot be served ({exc.strerror}): pick a free port") from exc
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_gpus, args=(metrics, stop), daemon=True) if gpu else None
    if sampler:
        sampler.start()
    try:
        yield metrics
    finally:
        stop.set()
        if sampler:
            sampler.join(timeout=5)
        if pushgateway:
            try:
                push_to_gateway(pushgateway, job=PUSH_JOB, registry=metrics.registry, grouping_key=grouping or {})
            except OSError as exc:  # the results are already durable; a missed push must not fail the run
                log.warning("could not push metrics to the Pushgateway at %s: %s", pushgateway, exc)
        if server is not None:
            server.shutdown()
            server.server_close()
