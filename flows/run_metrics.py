"""The end of a run as operators see it: the drift baseline kept for the next run, and the run-level metrics pushed to
the Pushgateway (at the end of a successful run, and at a failure).

Grouping: ``job`` = the Prefect deployment's name (``helios`` for a run outside a deployment), ``run`` = the run
directory's name, so each scheduled pipeline keeps one group whose latest push is its latest run. A success replaces
the group (PUT); a failure only adds its samples (POST), so ``helios_last_success_timestamp_seconds`` survives it and
the "no successful run" alert keeps counting from the last real success.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from helios.catalog import RunCatalog
from helios.files import write_json
from tasks.report.drift import baseline_record, compare_runs, distribution
from tasks.report.run_metrics import RUN_METRICS, Sample, run_samples, status_samples

log = logging.getLogger(__name__)


def job_name() -> str:
    """The Prefect deployment this flow run belongs to, or ``helios`` outside a deployment."""
    from prefect.runtime import deployment

    return str(deployment.name or "helios")


def grouping(catalog: RunCatalog) -> dict[str, str]:
    return {"run": catalog.run_dir.name}


def read_baseline(catalog: RunCatalog, job: str) -> dict[str, Any] | None:
    """The previous successful run's record for ``job`` on this run directory; None when there is none (or it is
    unreadable: the run then reports 'no previous run' instead of failing)."""
    path = catalog.drift_baseline(job)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the drift baseline %s (%s): the next successful run rewrites it", path, exc)
        return None


def run_drift(catalog: RunCatalog, predictions, accuracy: dict[str, float], refine: dict) -> dict[str, Any]:
    """This run's drift section against the previous successful run of the same job (``tasks/report/drift.py``)."""
    job, now = job_name(), distribution(predictions)
    drift = compare_runs(now, read_baseline(catalog, job), accuracy, refine.get("shift_score"))
    return {**drift, "job": job, "current": now}


def registry_of(samples: list[Sample]):
    """A fresh prometheus_client registry with one gauge per metric name, set to the samples' values."""
    from prometheus_client import CollectorRegistry, Gauge

    registry, gauges = CollectorRegistry(), {}
    for sample in samples:
        if sample.name not in gauges:
            gauges[sample.name] = Gauge(sample.name, RUN_METRICS[sample.name], sorted(sample.labels), registry=registry)
        gauge = gauges[sample.name]
        (gauge.labels(**sample.labels) if sample.labels else gauge).set(sample.value)
    return registry


def push(url: str | None, job: str, catalog: RunCatalog, samples: list[Sample], replace: bool) -> bool:
    """Push ``samples`` under (job, run); True when pushed. A failed push is logged: the results are durable."""
    if not url:
        return False
    from prometheus_client import push_to_gateway, pushadd_to_gateway

    send = push_to_gateway if replace else pushadd_to_gateway
    try:
        send(url, job=job, registry=registry_of(samples), grouping_key=grouping(catalog))
    except (OSError, ValueError) as exc:  # unreachable, refused, or not a URL at all
        log.warning("could not push the run metrics to the Pushgateway at %s: %s (set infer.pushgateway to one that "
                    "answers, or leave it empty)", url, exc)
        return False
    return True


def publish_run(config, catalog: RunCatalog, summary) -> None:
    """After a successful run: keep its distribution as the next run's drift baseline, push its metrics."""
    drift = summary.drift or {}
    record = baseline_record(drift.get("current") or {}, summary.accuracy, drift.get("input_shift"),
                             {"mlflow_run_id": summary.mlflow.get("run_id"), "ended_at": time.time(),
                              "flow_run_id": summary.prefect.get("flow_run_id")})
    job = drift.get("job") or job_name()
    if drift.get("current"):
        write_json(record, catalog.drift_baseline(job))
    samples = run_samples(summary.to_dict(), time.time(), config.tracking.schedule_interval_s)
    push(config.infer.pushgateway, job, catalog, samples, replace=True)


def publish_failure(config, catalog: RunCatalog, stages: dict[str, float] | None = None) -> None:
    """At a failure: push status 0, the failure time and the stages that finished; never raises over the run's error."""
    try:
        samples = status_samples(False, time.time(), config.tracking.schedule_interval_s, stages or {})
        push(config.infer.pushgateway, job_name(), catalog, samples, replace=False)
    except Exception as exc:  # noqa: BLE001 - the run's own error is what the user needs to see
        log.warning("could not push the failed run's metrics: %s", exc)
