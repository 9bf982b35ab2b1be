"""PSI drift between runs: invariants on hand-made distributions, and the drift section against a baseline."""
from __future__ import annotations

import pandas as pd
import pytest

from tasks.report.drift import baseline_record, compare_runs, distribution, label_psi, level, psi


def frame(labels, confidences, errors=0) -> pd.DataFrame:
    rows = [{"status": "ok", "label": l, "confidence": c} for l, c in zip(labels, confidences)]
    rows += [{"status": "error", "label": None, "confidence": None}] * errors
    return pd.DataFrame(rows)


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    assert psi([10, 20, 30], [20, 40, 60]) == pytest.approx(0.0)
    small, large = psi([50, 50], [45, 55]), psi([50, 50], [10, 90])
    assert 0 < small < 0.1 and large > 0.25
    assert psi([50, 50], [10, 90]) == pytest.approx(psi([10, 90], [50, 50]))  # symmetric
    assert psi([0, 0], [1, 2]) == 0.0  # nothing to compare with


def test_psi_needs_the_same_bins():
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2], [1, 2, 3])


def test_a_label_one_run_never_predicted_counts_as_zero_there():
    assert label_psi({"a": 50, "b": 50}, {"a": 50, "b": 50}) == pytest.approx(0.0)
    assert label_psi({"a": 100}, {"a": 50, "c": 50}) > 0.25
    assert [level(v) for v in (0.05, 0.2, 0.3, None)] == ["stable", "moderate", "significant", None]


def test_distribution_counts_ok_rows_only():
    d = distribution(frame(["1", "1", "2"], [0.95, 0.55, 0.05], errors=2))
    assert d["n"] == 3 and d["labels"] == {"1": 2, "2": 1}
    assert sum(d["confidence_counts"]) == 3 and d["confidence_counts"][9] == 1 and d["confidence_counts"][0] == 1


def test_compare_against_a_baseline_reports_psi_accuracy_change_and_input_shift():
    before = distribution(frame(["1"] * 50 + ["2"] * 50, [0.97] * 100))
    same = distribution(frame(["1"] * 50 + ["2"] * 50, [0.97] * 100))
    shifted = distribution(frame(["1"] * 90 + ["2"] * 10, [0.45] * 100))
    baseline = baseline_record(before, {"infer": 0.9}, 0.01, {"mlflow_run_id": "abc"})
    quiet = compare_runs(same, baseline, {"infer": 0.9}, 0.02)
    loud = compare_runs(shifted, baseline, {"infer": 0.7}, 0.8)
    assert quiet["status"] == "compared" and quiet["label_psi"] == pytest.approx(0) and quiet["label_level"] == "stable"
    assert loud["label_psi"] > 0.25 and loud["confidence_psi"] > 0.25 and loud["confidence_level"] == "significant"
    assert loud["accuracy_change"] == {"infer": pytest.approx(-0.2)} and loud["previous_run"] == {"mlflow_run_id": "abc"}
    assert loud["input_shift"] == 0.8 and loud["previous_input_shift"] == 0.01


def test_without_a_baseline_the_section_says_so():
    drift = compare_runs(distribution(frame(["1"], [0.9])), None, {}, None)
    assert drift["status"].startswith("no previous successful run") and "label_psi" not in drift
