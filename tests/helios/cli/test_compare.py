"""compare_runs against a real MLflow SQLite store holding runs logged the way the flow logs them."""
from __future__ import annotations

import time

import pandas as pd
import pytest
from rich.console import Console

from flows.tags import METRIC_ACCURACY, METRIC_LLM_COST, METRIC_THROUGHPUT, RUN_TAGS, make_run_tags
from helios.cli.compare import compare_runs, render_comparison
from helios.errors import UsageError


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """Four pipeline runs in experiment 'helios' (oldest first), each but the last with a nested variant run."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("helios")
    client.create_experiment("other")
    runs = [
        ("mnist-cnn", "fp32", {METRIC_THROUGHPUT: 900.0, METRIC_ACCURACY: 0.91}, "FINISHED"),
        ("mnist-cnn", "int8", {METRIC_THROUGHPUT: 1700.0, METRIC_ACCURACY: 0.93, METRIC_LLM_COST: 0.0123}, "FINISHED"),
        ("minilm-[zero-shot]", "int8", {METRIC_THROUGHPUT: 72.5}, "FAILED"),
    ]
    for i, (model, variant, metrics, status) in enumerate(runs):
        run = client.create_run(experiment, start_time=int(time.time() * 1000) - (3 - i) * 1000,
                                tags=make_run_tags(model, variant, "cpu-avx2", f"flow-{i}", f"http://prefect/runs/{i}"))
        for name, value in metrics.items():
            client.log_metric(run.info.run_id, name, value)
        client.set_terminated(run.info.run_id, status=status)
        # The flow nests one run per model variant under the pipeline run; compare leaves those out.
        client.create_run(experiment, tags={"mlflow.parentRunId": run.info.run_id, "helios.variant": "nested"})
    client.create_run(experiment, tags=make_run_tags("no-variant-tag", None, "cpu"))  # the newest run, tags missing
    return uri


def test_compare_lists_newest_runs_first_with_tags_and_metrics(tracking_uri):
    frame = compare_runs(tracking_uri, "helios", last=10)

    assert list(frame.columns) == ["run_id", "start", "model", "variant", "hardware_class", "input_digest", "throughput",
                                   "accuracy", "llm_cost_usd", "compute_cost_usd", "cost_per_1k_files_usd", "status",
                                   "regressed"]
    assert list(frame["model"]) == ["no-variant-tag", "minilm-[zero-shot]", "mnist-cnn", "mnist-cnn"]
    assert list(frame["status"]) == ["RUNNING", "FAILED", "FINISHED", "FINISHED"]
    assert frame.loc[2, "throughput"] == 1700.0 and frame.loc[2, "llm_cost_usd"] == 0.0123
    assert pd.isna(frame.loc[1, "accuracy"]) and pd.isna(frame.loc[1, "llm_cost_usd"])
    assert (frame["hardware_class"][1:] == "cpu-avx2").all() and pd.isna(frame.loc[0, "variant"])


def test_last_limits_the_rows(tracking_uri):
    assert list(compare_runs(tracking_uri, "helios", last=3)["model"]) == ["no-variant-tag", "minilm-[zero-shot]", "mnist-cnn"]


def test_unknown_experiment_names_the_existing_ones(tracking_uri):
    with pytest.raises(UsageError, match=r"no MLflow experiment 'nope'.*helios, other"):
        compare_runs(tracking_uri, "nope")
    with pytest.raises(UsageError, match="--last 0"):
        compare_runs(tracking_uri, "helios", last=0)


def test_missing_sqlite_store_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no MLflow store at sqlite:///.*nothing.db"):
        compare_runs(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()


def test_rendered_table_shows_every_run(tracking_uri):
    console = Console(width=200, record=True)
    console.print(render_comparison(compare_runs(tracking_uri, "helios")))
    text = console.export_text()

    assert "experiment helios" in text
    assert "minilm-[zero-shot]" in text  # brackets in names are not taken for rich markup
    assert "1,700.0" in text and "0.930" in text and "0.0123" in text and "FAILED" in text


def test_run_tags_are_the_documented_names():
    assert RUN_TAGS == ("helios.model", "helios.variant", "helios.hardware_class", "prefect.flow_run_id",
                        "prefect.flow_run_url")
    assert make_run_tags("m", None, "cpu") == {"helios.model": "m", "helios.hardware_class": "cpu"}


def test_a_run_that_regressed_against_the_previous_run_of_its_deployment_is_marked(tmp_path):
    """Runs of one deployment share the run name ``<model>-<run dir>``; the previous finished one is the baseline."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("helios")
    runs = [  # oldest first: run name, accuracy, files/s, files reused, status
        ("mnist-cnn-nightly", 0.950, 1000.0, 0, "FINISHED"),
        ("mnist-cnn-nightly", 0.930, 1000.0, 0, "FINISHED"),  # accuracy -2 points
        ("mnist-cnn-nightly", 0.100, 10.0, 0, "FAILED"),  # failed: not a baseline, not marked
        ("mnist-cnn-adhoc", 0.500, 10.0, 0, "FINISHED"),  # another deployment: first of its own
        ("mnist-cnn-nightly", 0.932, 800.0, 0, "FINISHED"),  # files/s -20 % against the 0.930 run
        ("mnist-cnn-nightly", 0.929, 100.0, 1500, "FINISHED"),  # reused files: throughput not compared; -0.3 pt
    ]
    for i, (name, accuracy, speed, reused, status) in enumerate(runs):
        run = client.create_run(experiment, start_time=int(time.time() * 1000) - (10 - i) * 1000, run_name=name,
                                tags=make_run_tags("mnist-cnn", "fp32", "cpu-avx2"))
        for metric, value in ((METRIC_ACCURACY, accuracy), (METRIC_THROUGHPUT, speed), ("files.reused", reused)):
            client.log_metric(run.info.run_id, metric, value)
        client.set_terminated(run.info.run_id, status=status)

    frame = compare_runs(uri, "helios", last=6)
    assert frame["regressed"].fillna("").tolist()[::-1] == ["", "accuracy -2.00 pt", "", "", "files/s -20%", ""]
    # the baseline of the oldest run shown lies beyond --last
    assert compare_runs(uri, "helios", last=2)["regressed"].fillna("").tolist() == ["", "files/s -20%"]
    console = Console(record=True, width=250)
    console.print(render_comparison(frame))
    text = console.export_text()
    assert "files/s -20%" in text and "accuracy -2.00 pt" in text
