"""A slice of the real pipeline under Prefect's test harness with MLflow on SQLite."""
import json

import pandas as pd
import pytest

from helios.cli.config_file import load_config


def run(tmp_path, *overrides):
    from flows.pipeline import helios_pipeline

    cfg = load_config(None, [f"out={tmp_path / 'run'}", *overrides])
    return helios_pipeline(cfg), tmp_path / "run"


def test_mnist_pipeline_writes_the_output_contract(prefect_harness, tmp_path):
    # every stage runs; refine with one TENT pass instead of three (its gains are test_remote_input_runs_every_stage's
    # and tests/helios/test_quickstart.py's business, not the output contract's)
    result, run_dir = run(tmp_path, "demo.n=300", "optimize.variants=[fp32,int8-dynamic]", "optimize.eval_samples=64",
                          "optimize.latency_runs=5", "refine.tent_epochs=1")
    predictions = pd.read_parquet(run_dir / "predictions.parquet")
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    report = json.loads((run_dir / "report.json").read_text())
    assert len(predictions) == len(manifest) == 300 and predictions["path"].is_unique
    assert predictions.loc[predictions["status"] == "ok", "label"].isin([str(d) for d in range(10)]).all()
    assert report["counts"]["files"] == 300 and set(report["accuracy"]) >= {"infer", "refine", "review"}
    assert report["review"]["status"].startswith("skipped")
    assert (run_dir / "model" / "model.onnx").is_file() and (run_dir / "model" / "model.json").is_file()
    assert json.loads((run_dir / "config.json").read_text())["demo"]["n"] == 300

    from mlflow.tracking import MlflowClient

    client = MlflowClient(result["tracking_uri"])
    mlrun = client.get_run(result["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["helios.model"] == "mnist-cnn" and mlrun.data.tags["helios.hardware_class"]
    assert mlrun.data.metrics["files.files"] == 300 and "throughput_files_per_s" in mlrun.data.metrics
    assert mlrun.data.params["config.demo.n"] == "300"
    artifacts = {a.path for a in client.list_artifacts(result["mlflow_run_id"])}
    assert {"predictions.parquet", "report.json"} <= artifacts


def test_text_pipeline_with_minilm(prefect_harness, tmp_path):
    result, run_dir = run(tmp_path, "model.name=minilm", "demo.kind=text", "demo.n=120", "optimize.enabled=false",
                          "tracking.enabled=false")
    predictions = pd.read_parquet(run_dir / "predictions.parquet")
    assert len(predictions) == 120 and (predictions["status"] == "ok").all()
    assert result["accuracy"]["infer"] > 0.9  # the topic texts are easy for zero-shot MiniLM


def test_bad_file_becomes_an_error_row_and_the_run_goes_on(prefect_harness, tmp_path):
    from helios.data.demo import write_demo

    write_demo("mnist", 120, tmp_path / "d")
    (tmp_path / "d" / "files" / "clean" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "d" / "files" / "empty.png").write_bytes(b"")
    result, run_dir = run(tmp_path, f"input={tmp_path / 'd' / 'files'}", "optimize.enabled=false", "tracking.enabled=false",
                          "refine.enabled=false")
    predictions = pd.read_parquet(run_dir / "predictions.parquet").set_index("path")
    assert len(predictions) == 122
    assert predictions.loc["clean/broken.png", "status"] == "error"
    assert "empty" in predictions.loc["empty.png", "error"]
    assert result["counts"]["error"] == 2


def test_parity_gate_stops_the_run(prefect_harness, tmp_path):
    from tasks.prepare.parity import ParityError

    with pytest.raises(ParityError, match="max_abs_logit_diff"):
        run(tmp_path, "demo.n=60", "prepare.max_abs_logit_diff=1e-12", "tracking.enabled=false")


def test_remote_input_runs_every_stage(prefect_harness, tmp_path):
    """An fsspec URL (the in-process memory:// filesystem standing in for s3://): scan and infer read it remotely;
    prepare, optimize and refine decode local copies of just the files they need."""
    import fsspec

    from helios.data.demo import write_demo

    labels = write_demo("mnist", 200, tmp_path / "d", corrupt=("motion_blur",))
    fs = fsspec.filesystem("memory")
    local = tmp_path / "d" / "files"
    for path in local.rglob("*.png"):
        fs.pipe_file(f"/helios-test/digits/{path.relative_to(local).as_posix()}", path.read_bytes())
    fs.pipe_file("/helios-test/digits/clean/broken.png", b"\x89PNG\r\n\x1a\nnot really")
    result, run_dir = run(tmp_path, "input=memory://helios-test/digits", f"labels={labels}",
                          "optimize.variants=[fp32]", "optimize.eval_samples=32", "optimize.latency_runs=5",
                          "tracking.enabled=false")
    predictions = pd.read_parquet(run_dir / "predictions.parquet").set_index("path")
    report = json.loads((run_dir / "report.json").read_text())
    assert len(predictions) == 201 and predictions.loc["clean/broken.png", "status"] == "error"
    assert (predictions["status"] == "ok").sum() == 200
    assert report["refine"]["status"] == "done" and report["refine"]["methods"]["bn-adapt"]["touched"] == 200
    assert report["accuracy"]["refine"] > report["accuracy"]["infer"]  # half the digits are motion-blurred
    copies = run_dir / "input-copies"
    assert len(list(copies.rglob("*.png"))) == 200  # the readable files, once each


def test_credentials_in_uris_reach_no_file_of_the_run_or_the_mlflow_store(prefect_harness, tmp_path):
    secret = "s3cr3t-Tok3n-4242"
    result, run_dir = run(tmp_path, "demo.n=60", "optimize.enabled=false", "refine.enabled=false",
                          f"review.api_base=https://bob:{secret}@llm.example.com/v1?api_key={secret}",
                          f"infer.runner_address=tcp://alice:{secret}@10.0.0.1:8786")
    assert result["mlflow_run_id"]
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
    config = json.loads((run_dir / "config.json").read_text())
    assert config["review"]["api_base"] == "https://***@llm.example.com/v1?api_key=***"


def test_a_failed_run_ends_failed_in_mlflow_with_its_error(prefect_harness, tmp_path):
    from mlflow.tracking import MlflowClient

    from helios.errors import UsageError

    bad_labels = tmp_path / "labels.csv"
    bad_labels.write_text("file,class\na.png,1\n")
    with pytest.raises(UsageError, match="needs path and label"):
        run(tmp_path, "demo.n=30", f"labels={bad_labels}")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("helios").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["helios.error"].startswith("UsageError: labels file")
