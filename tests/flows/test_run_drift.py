"""Drift between runs on real demo corpora: a clean run, another clean one, then one half fogged (the corruption
the digit model suffers most from). The fogged run must drift further from its predecessor than the second clean
run did from the first, on every measure; costs land in the report, MLflow and ``helios compare``."""
from __future__ import annotations

import json

import pytest

from helios.cli.config_file import load_config

# Three different sets in one work directory: each adapts afresh (a kept adaptation would answer a wholly new set,
# with readapt_advised in the report: tasks/refine/memo.py).
SMALL = ("demo.n=200", "optimize.variants=[fp32]", "optimize.eval_samples=64", "optimize.latency_runs=5",
         "review.enabled=false", "refine.reuse_adaptation=false")


def run_on(tmp_path, name: str, corrupt: tuple[str, ...], seed: int) -> dict:
    from flows.pipeline import helios_pipeline
    from helios.data.demo import write_demo

    labels = write_demo("mnist", 200, tmp_path / name, corrupt, seed)
    cfg = load_config(None, [f"out={tmp_path / 'work' / 'run'}", f"input={tmp_path / name / 'files'}",
                             f"labels={labels}", *SMALL])
    result = helios_pipeline(cfg)
    return json.loads((tmp_path / "work" / "run" / "report.json").read_text()) | {"result": result}


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, prefect_harness):
    tmp = tmp_path_factory.mktemp("drift")
    return [run_on(tmp, "clean-a", (), 0), run_on(tmp, "clean-b", (), 1), run_on(tmp, "fog", ("fog",), 2)]


def test_the_first_run_has_nothing_to_compare_with(three_runs):
    first = three_runs[0]["drift"]
    assert first["status"].startswith("no previous successful run") and first["input_shift"] is not None


def test_a_fogged_run_drifts_further_than_a_second_clean_one(three_runs):
    _, clean, fog = (r["drift"] for r in three_runs)
    assert clean["status"] == fog["status"] == "compared"
    assert fog["label_psi"] > clean["label_psi"] and fog["confidence_psi"] > clean["confidence_psi"]
    assert fog["confidence_psi"] > 0.1 and clean["confidence_level"] == "stable"
    assert fog["mean_confidence"] < fog["previous_mean_confidence"]
    assert fog["input_shift"] > 3 * clean["input_shift"]  # refine's BN statistics moved away from the training data
    assert fog["accuracy_change"]["infer"] < clean["accuracy_change"]["infer"]
    assert fog["previous_run"]["mlflow_run_id"] == three_runs[1]["result"]["mlflow_run_id"]


def test_costs_are_in_the_report_mlflow_and_compare(three_runs):
    from mlflow.tracking import MlflowClient

    from helios.cli.compare import compare_runs

    last = three_runs[-1]
    costs = last["costs"]
    assert costs["hourly_usd"] > 0 and costs["compute_usd"] > 0 and costs["wall_seconds"] > 0
    assert costs["total_per_1k_files_usd"] == pytest.approx(costs["total_usd"] * 1000 / 200, rel=1e-3)
    uri = last["result"]["tracking_uri"]
    metrics = MlflowClient(uri).get_run(last["result"]["mlflow_run_id"]).data.metrics
    assert metrics["compute_cost_usd"] == pytest.approx(costs["compute_usd"])
    assert metrics["run_cost_usd"] == pytest.approx(costs["total_usd"]) and "llm_cost_usd" in metrics
    table = compare_runs(uri, last=3)
    assert (table["compute_cost_usd"] > 0).all() and table["cost_per_1k_files_usd"].notna().all()
    html = (tmp_dir(last) / "report.html").read_text()
    assert "Drift and cost" in html and "confidence histogram (PSI)" in html


def tmp_dir(report: dict):
    from pathlib import Path

    return Path(report["run_dir"])
