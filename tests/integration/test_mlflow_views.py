"""MLflow as its users see it, on a real `mlflow server`: two pipeline runs over the same input, the LLM review
against the fake provider, then the experiment's kind, the runs' datasets, the review's traces, system metrics,
`helios compare`, and the experiment page rendered by headless Chromium (test-artifacts/mlflow-experiment.png).

The two runs are made once for the module (about a minute) and every test reads them.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "tasks" / "review"))  # the fake LLM provider of the review tests

from fake_llm import FakeLLM  # noqa: E402

EXPERIMENT = "helios-views-test"
SECRET = "sk-or-v1-HELIOS-VIEWS-5eCr3t-0123456789abcdef"
PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def run_pipeline(input_dir: Path, labels: Path, out: Path, fake: FakeLLM, mlflow_url: str) -> dict:
    """One pipeline run: optimize on one variant (its sample is a dataset), no refine, the review on the fake."""
    from flows.pipeline import helios_pipeline
    from helios.cli.config_file import load_config

    review = {"model": "openai/fake-a", "fallbacks": ["openai/fake-b"], "api_base": fake.url, "max_items": 4,
              "prices": {"openai/fake-a": PRICE, "openai/fake-b": PRICE}, "retries": 1, "backoff_s": 0.01,
              "max_concurrency": 1, "cache_dir": str(out / "llm-cache")}
    # optimize.reuse_champion=false: run 2 must optimize too (its sample is a dataset), not reuse run 1's champion
    cfg = load_config(None, [f"input={input_dir}", f"labels={labels}", f"out={out}", "optimize.variants=[fp32]",
                             "optimize.reuse_champion=false",
                             "optimize.eval_samples=32", "optimize.latency_runs=5", "refine.enabled=false",
                             f"review={json.dumps(review)}", f"tracking.mlflow_uri={mlflow_url}",
                             f"tracking.experiment={EXPERIMENT}", "tracking.system_metrics_s=1"])
    return helios_pipeline(cfg)


@pytest.fixture(scope="module")
def two_runs(mlflow_server, prefect_harness, tmp_path_factory):
    """Two runs over the same unchanged input; the first request of run 1 fails twice (retry, then fallback)."""
    from helios.data.demo import write_demo
    from mlflow.tracking._tracking_service import utils

    root = tmp_path_factory.mktemp("views")
    labels = write_demo("mnist", 80, root / "demo", corrupt=("fog",))
    results = []
    with pytest.MonkeyPatch.context() as patch, FakeLLM() as fake:
        patch.setattr(utils, "_tracking_uri", utils._tracking_uri)  # Tracker.start sets mlflow's global URI
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # ... and this variable: both come back afterwards
        patch.setenv("OPENROUTER_API_KEY", SECRET)
        fake.script("fake-a", 500, 500)
        for name in ("run-1", "run-2"):
            results.append(run_pipeline(root / "demo" / "files", labels, root / name, fake, mlflow_server.url))
    reports = [json.loads(Path(r["run_dir"], "report.json").read_text()) for r in results]
    return results, reports


@pytest.fixture(scope="module")
def client(mlflow_server):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.url)


def test_experiment_opens_on_runs_and_says_what_a_run_is(two_runs, client):
    tags = client.get_experiment_by_name(EXPERIMENT).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"].startswith("Helios pipeline runs.")


def test_existing_experiment_gets_the_kind_on_the_next_run(mlflow_server, client):
    from flows.experiment import ensure_experiment

    exp_id = client.create_experiment("helios-views-older", tags={"mlflow.note.content": "mine"})
    client.set_experiment_tag(exp_id, "mlflow.experimentKind", "genai_development")  # as the UI may guess it
    assert ensure_experiment(client, "helios-views-older", None) == exp_id
    tags = client.get_experiment(exp_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development" and tags["mlflow.note.content"] == "mine"


def test_runs_log_their_datasets_with_equal_digests_for_the_same_input(two_runs, client):
    results, reports = two_runs
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = {r.info.run_id: r for r in client.search_runs([exp_id])}
    inputs = []
    for result in results:
        datasets = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
                    for d in runs[result["mlflow_run_id"]].inputs.dataset_inputs}
        assert set(datasets) == {"inference", "evaluation", "optimization"}
        assert json.loads(datasets["inference"].profile) == {"num_rows": 80}
        assert json.loads(datasets["evaluation"].profile) == {"num_rows": 80}
        assert json.loads(datasets["optimization"].profile)["num_rows"] == 64  # max(eval 32, parity 64) files
        assert json.loads(datasets["inference"].source)["uri"].startswith("file:///")
        assert datasets["inference"].name == "demo/files" and datasets["inference"].source_type == "local"
        assert runs[result["mlflow_run_id"]].data.tags["mlflow.source.name"] == "helios-pipeline"  # Source column
        inputs.append({context: d.digest for context, d in datasets.items()})
    assert inputs[0] == inputs[1] and len(inputs[0]["inference"]) == 32


def test_compare_shows_the_short_input_digest(two_runs, mlflow_server):
    from helios.cli.compare import compare_runs

    frame = compare_runs(mlflow_server.url, EXPERIMENT, last=2)
    assert frame["input_digest"].str.len().tolist() == [8, 8] and frame["input_digest"].nunique() == 1


def review_traces(client, run_id: str) -> list:
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    return list(client.search_traces(locations=[exp_id], run_id=run_id, max_results=100))


def test_review_requests_are_traces_on_the_run_with_the_reports_tokens_and_cost(two_runs, client):
    results, reports = two_runs
    for result, report in zip(results, reports):
        review = report["review"]
        traces = review_traces(client, result["mlflow_run_id"])
        assert review["status"] == "done" and len(traces) == review["reviewed"] == 4
        usage = [t.info.token_usage for t in traces]
        per_model = review["per_model"]
        assert sum(u["input_tokens"] for u in usage) == sum(m["input_tokens"] for m in per_model.values())
        assert sum(u["output_tokens"] for u in usage) == sum(m["output_tokens"] for m in per_model.values())
        assert sum(t.info.cost["total_cost"] for t in traces) == pytest.approx(review["cost_usd"], abs=1e-6)
        llm_spans = [s for t in traces for s in t.data.spans if s.span_type == "LLM"]
        assert len(llm_spans) == sum(m["requests"] for m in per_model.values())
        assert all(s.get_attribute("mlflow.llm.model") in per_model for s in llm_spans)


def test_retries_and_fallbacks_show_in_the_first_items_trace(two_runs, client):
    results, _ = two_runs
    traces = review_traces(client, results[0]["mlflow_run_id"])
    [retried] = [t for t in traces if len(t.data.spans) > 2]
    root = next(s for s in retried.data.spans if s.parent_id is None)
    assert root.attributes["helios.retries"] == 1 and root.attributes["helios.fallbacks"] == ["openai/fake-b"]
    assert [s.status.status_code for s in retried.data.spans if s.span_type == "LLM"] == ["ERROR", "ERROR", "OK"]
    assert root.outputs["status"] == "reviewed" and root.outputs["verdict"] in ("agree", "disagree", "unsure")
    assert root.inputs["image"].startswith("<image not stored")  # tracking.trace_images is off by default


def test_the_api_key_is_in_no_trace_and_nowhere_in_the_store(two_runs, client, mlflow_server):
    results, _ = two_runs
    for result in results:
        for trace in review_traces(client, result["mlflow_run_id"]):
            assert SECRET not in trace.to_json()
    stored = [p for p in mlflow_server.home.rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if SECRET.encode() in p.read_bytes()]


def test_system_metrics_are_sampled_on_the_run(two_runs, client):
    results, _ = two_runs
    metrics = client.get_run(results[0]["mlflow_run_id"]).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/disk_usage_percentage"} <= set(metrics)
    history = client.get_metric_history(results[0]["mlflow_run_id"], "system/cpu_utilization_percentage")
    assert len(history) >= 2  # sampled every second during a run of several seconds, plus the last sample


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url`` with 30 s of virtual time for the UI's requests and rendering."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1600,1000",
               "--virtual-time-budget=30000", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def page_text(tmp_path: Path, url: str) -> str:
    return text_of(chromium(tmp_path, url, "--dump-dom"))


def text_of(done: subprocess.CompletedProcess) -> str:
    """The text of the DOM that ``--dump-dom`` printed."""
    return re.sub(r"<[^>]+>", " ", done.stdout)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_the_link_helios_prints_opens_the_runs_table_and_the_overview_shows_tokens_and_cost(two_runs, client,
                                                                                          mlflow_server, tmp_path):
    from flows.experiment import runs_page_url

    results, _ = two_runs
    url = runs_page_url(mlflow_server.url, results[0]["mlflow_run_id"])
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "mlflow-experiment.png"
    screenshot.unlink(missing_ok=True)
    # one browser run renders the page (the MLflow UI takes a while) and gives both the screenshot and the DOM
    shot = chromium(tmp_path, url, f"--screenshot={screenshot}", "--dump-dom")
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    text = text_of(shot)
    assert "mnist-cnn-run-1" in text and "mnist-cnn-run-2" in text, f"no runs table in the page:\n{text[-3000:]}"
    assert "demo/files" in text  # the Dataset column

    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    overview = page_text(tmp_path, f"{mlflow_server.url}/#/experiments/{exp_id}?workflowType=genai")
    assert "Token Usage" in overview and "Total Cost" in overview, overview[-3000:]
