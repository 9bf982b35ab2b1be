"""The run-level metric set built from a run's summary: names, labels and values; failure pushes carry less."""
from __future__ import annotations

from tasks.report.run_metrics import RUN_METRICS, run_samples, status_samples

SUMMARY = {
    "counts": {"files": 200, "ok": 190, "error": 10, "flagged": 1, "reused": 0},
    "stages": {"detect": 1.0, "infer": 2.5, "report": 0.5},
    "files_per_s": 80.0, "accuracy": {"infer": 0.8, "refine": 0.9},
    "refine": {"status": "done", "methods": {"bn-adapt": {"changed": 12}, "tta": {"changed": 3}},
               "reverted": [{"method": "tent"}]},
    "review": {"cost_usd": 0.12, "budget_usd": 0.5,
               "per_model": {"m1": {"requests": 7, "errors": 2}, "m2": {"requests": 3, "errors": 0}}},
    "costs": {"hourly_usd": 0.09, "compute_usd": 0.0001, "total_per_1k_files_usd": 0.6, "total_usd": 0.1201},
    "drift": {"label_psi": 0.3, "confidence_psi": 0.02, "input_shift": 0.7, "accuracy_change": {"refine": -0.1}},
    "model": {"name": "mnist-cnn", "variant": "int8-static", "version": "3"},
    "hardware": {"hardware_class": "cpu-avx2-2c"},
}


def values(samples) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


def test_a_successful_run_exports_every_figure_with_its_labels():
    got = values(run_samples(SUMMARY, ended_at=1000.0, interval_s=86400))
    assert got[("helios_last_success_timestamp_seconds", ())] == 1000.0 and got[("helios_last_run_status", ())] == 1.0
    assert got[("helios_stage_duration_seconds", (("stage", "infer"),))] == 2.5
    assert got[("helios_run_duration_seconds", ())] == 4.0
    assert got[("helios_run_files", (("status", "error"),))] == 10 and got[("helios_run_files", (("status", "total"),))] == 200
    assert got[("helios_accuracy", (("stage", "refine"),))] == 0.9
    assert got[("helios_accuracy_change", (("stage", "refine"),))] == -0.1
    assert got[("helios_refine_changed_files", (("method", "bn-adapt"),))] == 12 and got[("helios_refine_reverted", ())] == 1
    assert got[("helios_drift_psi", (("kind", "label"),))] == 0.3 and got[("helios_input_shift_score", ())] == 0.7
    assert got[("helios_llm_requests", ())] == 10 and got[("helios_llm_failures", ())] == 2
    assert got[("helios_llm_cost_usd", ())] == 0.12 and got[("helios_llm_budget_usd", ())] == 0.5
    assert got[("helios_compute_cost_usd", ())] == 0.0001 and got[("helios_cost_per_1k_files_usd", ())] == 0.6
    info = (("hardware_class", "cpu-avx2-2c"), ("model", "mnist-cnn"), ("variant", "int8-static"), ("version", "3"))
    assert got[("helios_model_info", info)] == 1.0
    assert {name for name, _ in got} <= set(RUN_METRICS) and "helios_last_failure_timestamp_seconds" not in dict(got)


def test_unknown_figures_are_left_out_not_exported_as_zero():
    bare = {**SUMMARY, "accuracy": {}, "drift": {"status": "no previous successful run"}, "costs": {},
            "refine": {"status": "disabled"}, "files_per_s": None}
    names = {s.name for s in run_samples(bare, 1.0, 60)}
    assert not names & {"helios_accuracy", "helios_drift_psi", "helios_compute_cost_usd", "helios_refine_reverted",
                        "helios_run_throughput_files_per_second"}


def test_a_failure_pushes_status_zero_and_its_own_timestamp():
    got = values(status_samples(False, 5.0, 3600, {"detect": 1.0}))
    assert got[("helios_last_run_status", ())] == 0.0 and got[("helios_last_failure_timestamp_seconds", ())] == 5.0
    assert ("helios_last_success_timestamp_seconds", ()) not in got  # the Pushgateway keeps the last success's
