"""A real `prefect server start`: `helios ops pools`, `prefect deploy --all`, process workers, runs through the API."""
from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from servers import REPO, Server, free_port, http_get, python_module

from flows.deployments import CPU_POOL, GPU_DEPLOYMENT, GPU_LIMIT, GPU_POOL, PIPELINE_DEPLOYMENT, RESULTS_BLOCK


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args[2:])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@contextmanager
def prefect_client(api_url: str):
    """A sync client on the test server, whatever other tests' harness has set in this process."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        yield client


@pytest.fixture(scope="module")
def deployed(prefect_server):
    """Pools, limit and result block made twice (idempotent), then both deployments from prefect.yaml."""
    results_dir = prefect_server.home / "prefect-results"
    pools = python_module("helios.cli", "ops", "pools", "--results-dir", str(results_dir))
    first, second = run_cli(pools, prefect_server.env), run_cli(pools, prefect_server.env)
    # the server is shared by the session: another module (test_dispatch_timeout) may have made the pools first
    assert f"created work pool {GPU_POOL}" in first or f"work pool {GPU_POOL} exists" in first
    assert f"work pool {GPU_POOL} exists" in second
    assert f"concurrency limit {GPU_LIMIT} exists (1 slots)" in second
    run_cli(python_module("prefect", "--no-prompt", "deploy", "--all"), prefect_server.env)
    return results_dir


def start_worker(pool: str, prefect_server, log_dir: Path) -> Server:
    """A process worker on ``pool`` running this checkout (HELIOS_HOME), ready once its health endpoint answers."""
    port = free_port()
    env = {**prefect_server.env, "HELIOS_HOME": str(REPO), "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
           "PREFECT_WORKER_WEBSERVER_PORT": str(port), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    env.pop("OPENROUTER_API_KEY", None)  # the review stage must skip, never call a real provider
    worker = Server(f"worker-{pool}", python_module("prefect", "worker", "start", "--pool", pool, "--limit", "1",
                                                    "--with-healthcheck"), env, log_dir)
    worker.wait_until_healthy(f"http://127.0.0.1:{port}/health")
    return worker


@pytest.fixture(scope="module")
def gpu_worker(deployed, prefect_server):
    worker = start_worker(GPU_POOL, prefect_server, prefect_server.home / "workers")
    yield worker
    worker.stop()


def test_pools_limit_and_deployments_match_prefect_yaml(deployed, prefect_server):
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    with prefect_client(prefect_server.url) as client:
        assert client.read_work_pool(CPU_POOL).type == client.read_work_pool(GPU_POOL).type == "process"
        limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        assert (limit.limit, limit.active) == (1, True)
        block = client.read_block_document_by_name(RESULTS_BLOCK, "local-file-system")
        assert block.data["basepath"] == str(deployed)
        pipeline = client.read_deployment_by_name(PIPELINE_DEPLOYMENT)
        gpu = client.read_deployment_by_name(GPU_DEPLOYMENT)
    assert pipeline.work_pool_name == CPU_POOL and gpu.work_pool_name == GPU_POOL
    assert [s.schedule.cron for s in pipeline.schedules] == ["0 2 * * *"]
    assert pipeline.parameters == spec["deployments"][0]["parameters"]
    # the working directory is read on the worker at run time, not frozen at deploy time
    assert pipeline.pull_steps == [{"flows.deployments.enter_helios_home": {}}]
    env = gpu.job_variables["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
    assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == f"local-file-system/{RESULTS_BLOCK}"
    status, metrics = http_get(f"{prefect_server.url}/metrics")  # what infra/prometheus/prometheus.yml scrapes
    assert status == 200 and "# TYPE" in metrics


def test_gpu_stage_is_dispatched_to_the_gpu_pool_and_its_result_read_back(deployed, gpu_worker, prefect_server,
                                                                         tmp_path):
    args = python_module("dispatch_driver", str(tmp_path), "30")
    env = {**prefect_server.env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)])}
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}\nworker:\n{gpu_worker.log_tail()}"
    result = json.loads(done.stdout.split("INFER_RESULT ", 1)[1])
    assert result["counts"] == {"files": 31, "ok": 30, "error": 1, "flagged": 0, "reused": 0, "worker_deaths": 0}
    assert result["predictions_path"] == str(tmp_path / "run" / "predictions.parquet")
    assert Path(result["predictions_path"]).is_file()

    with prefect_client(prefect_server.url) as client:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        deployment = client.read_deployment_by_name(GPU_DEPLOYMENT)
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
        runs = [r for r in runs if not r.state.is_cancelled()]  # test_dispatch_timeout's run on the shared server
        assert len(runs) == 1 and runs[0].state.is_completed()
        assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots == 0  # the slot came back
    assert len(list(deployed.iterdir())) >= 1, "the GPU run persisted no result in the shared result storage"
    assert f"Flow run '{runs[0].name}' - Finished in state Completed()" in gpu_worker.log_tail(20000)


def test_pipeline_deployment_runs_on_the_cpu_worker_and_sends_infer_to_the_gpu_pool(deployed, gpu_worker,
                                                                                     prefect_server, mlflow_server,
                                                                                     tmp_path):
    try:
        import flows.pipeline  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the pipeline is not importable yet ({exc}); the GPU dispatch test covers the deployment mechanics")
    config = {"out": str(tmp_path / "run"), "demo": {"n": 200}, "optimize": {"enabled": False},
              "refine": {"enabled": False}, "report": {"validation": "warn"}, "infer": {"pool": "gpu"},
              "tracking": {"mlflow_uri": mlflow_server.url, "experiment": "helios-deployment-test"}}
    cpu_worker = start_worker(CPU_POOL, prefect_server, prefect_server.home / "workers")
    try:
        with prefect_client(prefect_server.url) as client:
            deployment = client.read_deployment_by_name(PIPELINE_DEPLOYMENT)
            run = client.create_flow_run_from_deployment(deployment.id, parameters={"config": config})
            deadline = time.monotonic() + 300
            while not (run := client.read_flow_run(run.id)).state.is_final() and time.monotonic() < deadline:
                time.sleep(2)
            logs = f"cpu worker:\n{cpu_worker.log_tail()}\ngpu worker:\n{gpu_worker.log_tail()}"
            assert run.state.is_completed(), f"pipeline run ended {run.state.name}: {run.state.message}\n{logs}"
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter

            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
                any_=[run.id])))
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [run.id]}))
    finally:
        cpu_worker.stop()
    assert "helios-report" in {a.key for a in artifacts}
    gpu_runs = [r for r in children if r.work_pool_name == GPU_POOL]
    assert gpu_runs and gpu_runs[0].state.is_completed(), \
        "with infer.pool=gpu the pipeline must start helios-infer-gpu (flows.dispatch.run_infer_stage)"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["counts"]["files"] == 200

    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(mlflow_server.url)
    experiment = mlflow.get_experiment_by_name("helios-deployment-test")
    runs = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{run.id}'")
    [mlrun] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # variants are nested runs
    assert mlrun.info.status == "FINISHED" and mlrun.data.metrics["files.files"] == 200
    assert {"predictions.parquet", "report.json"} <= {a.path for a in mlflow.list_artifacts(mlrun.info.run_id)}
    assert mlflow.search_model_versions(), "the pipeline registered no champion model on the MLflow server"


def test_gpu_deployment_refuses_a_model_that_runs_code_unless_the_worker_opted_in(deployed, gpu_worker,
                                                                                   prefect_server, tmp_path):
    """Anyone who can reach the API can start helios-infer-gpu with any parameters: its infer_flow refuses a
    ``module:factory`` model before loading anything, on a worker without HELIOS_ALLOW_DEPLOYMENT_CODE."""
    from flows.deployments import CODE_OPT_IN

    model = {"model": {"name": "os:system"}, "onnx_path": str(tmp_path / "model.onnx"), "variant": "fp32",
             "identity": "0" * 32}
    parameters = {"cfg": {}, "model": model, "manifest_path": str(tmp_path / "manifest.parquet"),
                  "run_dir": str(tmp_path / "run")}
    with prefect_client(prefect_server.url) as client:
        deployment = client.read_deployment_by_name(GPU_DEPLOYMENT)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        deadline = time.monotonic() + 180
        while not (run := client.read_flow_run(run.id)).state.is_final() and time.monotonic() < deadline:
            time.sleep(1)
    log = gpu_worker.log_tail(20000)
    assert run.state.is_failed(), f"the GPU run ended {run.state.name}: {run.state.message}\nworker:\n{log[-3000:]}"
    assert f"set {CODE_OPT_IN}=1 in the worker's environment" in f"{run.state.message}\n{log}"
    assert not (tmp_path / "run").exists()  # refused before any work
