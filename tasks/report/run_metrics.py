"""The run-level Prometheus metrics of a pipeline run, as plain samples built from the run's summary.

Batch-job conventions (https://prometheus.io/docs/practices/instrumentation/#batch-jobs): pushed once at the end of
a run (and at a failure), a last-success timestamp, durations per phase. Every value is a gauge of *this* run; the
Pushgateway keeps the latest push per group, Prometheus keeps the history. ``flows/run_metrics.py`` pushes them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# name -> help: every run-level metric Helios exports (the dashboard test and README check against this list)
RUN_METRICS: dict[str, str] = {
    "helios_last_success_timestamp_seconds": "Unix time the last successful run of this job finished.",
    "helios_last_failure_timestamp_seconds": "Unix time the last failed run of this job stopped.",
    "helios_last_run_timestamp_seconds": "Unix time the last run of this job ended, successful or not.",
    "helios_last_run_status": "1 when the last run of this job succeeded, 0 when it failed.",
    "helios_schedule_interval_seconds": "The period of this job's schedule (tracking.schedule_interval_s).",
    "helios_run_duration_seconds": "Wall seconds of the run's stages.",
    "helios_stage_duration_seconds": "Wall seconds of each stage.",
    "helios_run_files": "Files of the run by status: total, ok, error, flagged, reused.",
    "helios_run_throughput_files_per_second": "Files per second of the infer stage.",
    "helios_accuracy": "Accuracy after each stage (runs with labels only).",
    "helios_accuracy_change": "Accuracy after each stage minus the previous successful run's.",
    "helios_refine_changed_files": "Answers the refine stage changed, by method.",
    "helios_refine_reverted": "Refine steps undone by the safety checks.",
    "helios_input_shift_score": "Refine's BatchNorm-statistics shift of the input against the training data.",
    "helios_drift_psi": "Population stability index against the previous successful run, by kind (label, confidence).",
    "helios_llm_requests": "LLM review requests sent.",
    "helios_llm_failures": "LLM review requests that failed.",
    "helios_llm_cost_usd": "LLM review cost of the run in USD.",
    "helios_llm_budget_usd": "LLM review budget of the run in USD (review.budget_usd).",
    "helios_compute_hourly_usd": "Hourly price of the run's hardware class (tracking.hourly_usd).",
    "helios_compute_cost_usd": "Compute cost of the run: hourly price times wall time.",
    "helios_cost_per_1k_files_usd": "Compute plus LLM cost per 1,000 files.",
    "helios_run_cost_usd": "Compute plus LLM cost of the run in USD.",
    "helios_model_info": "The model, selected variant, registered version and hardware class of the run (value 1).",
}


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _labelled(name: str, label: str, values: dict[str, Any]) -> list[Sample]:
    return [Sample(name, float(v), {label: str(k)}) for k, v in values.items() if _number(v)]


def _scalars(pairs: dict[str, Any]) -> list[Sample]:
    return [Sample(name, float(value)) for name, value in pairs.items() if _number(value)]


def status_samples(succeeded: bool, ended_at: float, interval_s: float, stages: dict[str, float]) -> list[Sample]:
    """What every push carries, success or failure: status, timestamps, the schedule's period, stage seconds."""
    stamp = "helios_last_success_timestamp_seconds" if succeeded else "helios_last_failure_timestamp_seconds"
    return [Sample("helios_last_run_status", 1.0 if succeeded else 0.0), Sample(stamp, ended_at),
            Sample("helios_last_run_timestamp_seconds", ended_at), Sample("helios_schedule_interval_seconds", interval_s),
            *_labelled("helios_stage_duration_seconds", "stage", stages)]


def _quality(summary: dict[str, Any]) -> list[Sample]:
    """Accuracy, its change, refine changes and reverts, drift."""
    refine, drift = summary.get("refine") or {}, summary.get("drift") or {}
    changed = {m: f.get("changed") for m, f in (refine.get("methods") or {}).items() if isinstance(f, dict)}
    samples = [*_labelled("helios_accuracy", "stage", summary.get("accuracy") or {}),
               *_labelled("helios_accuracy_change", "stage", drift.get("accuracy_change") or {}),
               *_labelled("helios_refine_changed_files", "method", changed),
               *_labelled("helios_drift_psi", "kind", {"label": drift.get("label_psi"),
                                                       "confidence": drift.get("confidence_psi")}),
               *_scalars({"helios_input_shift_score": drift.get("input_shift")})]
    if refine.get("status") == "done":
        samples.append(Sample("helios_refine_reverted", float(len(refine.get("reverted") or []))))
    return samples


def _spend(summary: dict[str, Any]) -> list[Sample]:
    """LLM requests, failures, cost and budget; compute price and cost."""
    review, costs = summary.get("review") or {}, summary.get("costs") or {}
    per_model = [f for f in (review.get("per_model") or {}).values() if isinstance(f, dict)]
    return _scalars({
        "helios_llm_requests": sum(f.get("requests", 0) for f in per_model),
        "helios_llm_failures": sum(f.get("errors", 0) for f in per_model),
        "helios_llm_cost_usd": review.get("cost_usd") or 0.0, "helios_llm_budget_usd": review.get("budget_usd"),
        "helios_compute_hourly_usd": costs.get("hourly_usd"), "helios_compute_cost_usd": costs.get("compute_usd"),
        "helios_cost_per_1k_files_usd": costs.get("total_per_1k_files_usd"),
        "helios_run_cost_usd": costs.get("total_usd")})


def run_samples(summary: dict[str, Any], ended_at: float, interval_s: float) -> list[Sample]:
    """Every run-level sample of a successful run, from its summary (``RunSummary.to_dict()``)."""
    counts, stages = summary.get("counts") or {}, summary.get("stages") or {}
    files = {"total": counts.get("files"), **{k: counts.get(k) for k in ("ok", "error", "flagged", "reused")}}
    model = summary.get("model") or {}
    info = {"model": model.get("name"), "variant": model.get("variant"), "version": model.get("version"),
            "hardware_class": (summary.get("hardware") or {}).get("hardware_class")}
    return [*status_samples(True, ended_at, interval_s, stages),
            *_scalars({"helios_run_duration_seconds": sum(stages.values()),
                       "helios_run_throughput_files_per_second": summary.get("files_per_s")}),
            *_labelled("helios_run_files", "status", files), *_quality(summary), *_spend(summary),
            Sample("helios_model_info", 1.0, {k: "" if v is None else str(v) for k, v in info.items()})]
