"""A real `mlflow server` (SQLite backend, proxied artifact store): Helios's Tracker logs a run there.

The full pipeline against this server (metrics, artifacts, the registered champion) runs in
test_prefect_deployments.py, through the helios-pipeline deployment.
"""
from __future__ import annotations

import json

from flows.tracking import Tracker


def test_tracker_logs_params_metrics_and_artifacts_through_the_server(mlflow_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)  # Tracker.start sets mlflow's global URI
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"counts": {"files": 200}}))
    tracker = Tracker.start(mlflow_server.url, "helios-server-test", tmp_path / "unused",
                            {"helios.model": "mnist-cnn", "mlflow.runName": "integration"})
    tracker.params({"config": {"demo": {"n": 200}, "infer": {"pool": "gpu"}}})
    tracker.metrics({"files": {"files": 200, "ok": 199}, "throughput_files_per_s": 123.5})
    tracker.artifact(report)
    tracker.finish("FINISHED")

    client = MlflowClient(mlflow_server.url)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "integration"
    assert run.data.params["config.infer.pool"] == "gpu" and run.data.tags["helios.model"] == "mnist-cnn"
    assert run.data.metrics == {"files.files": 200.0, "files.ok": 199.0, "throughput_files_per_s": 123.5}
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server, not a local path
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["report.json"]
    stored = list((mlflow_server.home / "artifacts").rglob("report.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text()) == {"counts": {"files": 200}}
