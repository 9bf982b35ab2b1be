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


@contextmanager
def prefect_client(api_url: str):
    """A sync client on the test server, whatever other tests' harness has set in this process."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        yield client


# ``deployed`` (pools, limit, result block made twice, then both deployments): tests/integration/conftest.py, once
# for the session's server, as test_dispatch_timeout needs them too.


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


@pytest.fixture(scope="module")
def cpu_worker(deployed, prefect_server):
    worker = start_worker(CPU_POOL, prefect_server, prefect_server.home / "workers")
    yield worker
    worker.stop()


def run_pipeline(client, config: dict, logs, timeout_s: float = 420):
    """Run the pipeline deployment with ``config`` and wait for it; (its flow run, its GPU child run). ``logs``:
    the workers' log tails, for a failure message."""
    from prefect.client.schemas.filters import FlowRunFilter

    deployment = client.read_deployment_by_name(PIPELINE_DEPLOYMENT)
    run = client.create_flow_run_from_deployment(deployment.id, parameters={"config": config})
    deadline = time.monotonic() + timeout_s
    while not (run := client.read_flow_run(run.id)).state.is_final() and time.monotonic() < deadline:
        time.sleep(2)
    assert run.state.is_completed(), f"pipeline run ended {run.state.name}: {run.state.message}\n{logs()}"
    children = client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [run.id]}))
    gpu_runs = [r for r in children if r.work_pool_name == GPU_POOL]
    assert gpu_runs and gpu_runs[0].state.is_completed(), \
        f"with infer.pool=gpu the pipeline must start helios-infer-gpu (flows.dispatch)\n{logs()}"
    return run, gpu_runs[0]


def stages_run_by(client, flow_run_id) -> set[str]:
    """The Prefect tasks a flow run ran itself, not in its subflows: "detect", "prepare", "optimize", ..."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.rsplit("-", 1)[0] for r in runs}  # task run names are "<task name>-<n>"


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


def worker_logs(cpu_worker, gpu_worker):
    return lambda: f"cpu worker:\n{cpu_worker.log_tail()}\ngpu worker:\n{gpu_worker.log_tail()}"


def test_pipeline_deployment_runs_on_the_cpu_worker_and_sends_infer_to_the_gpu_pool(deployed, gpu_worker, cpu_worker,
                                                                                     prefect_server, mlflow_server,
                                                                                     tmp_path):
    config = {"out": str(tmp_path / "run"), "demo": {"n": 200}, "optimize": {"enabled": False},
              "refine": {"enabled": False}, "report": {"validation": "warn"}, "infer": {"pool": "gpu"},
              "tracking": {"mlflow_uri": mlflow_server.url, "experiment": "helios-deployment-test"}}
    with prefect_client(prefect_server.url) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        run, gpu_run = run_pipeline(client, config, worker_logs(cpu_worker, gpu_worker))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run.id])))
        assert "prepare" in stages_run_by(client, gpu_run.id)  # the GPU worker exported the model for itself
    assert "helios-report" in {a.key for a in artifacts}
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["counts"]["files"] == 200
    assert (tmp_path / "run" / "model-gpu" / "model.onnx").is_file()

    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(mlflow_server.url)
    experiment = mlflow.get_experiment_by_name("helios-deployment-test")
    runs = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{run.id}'")
    [mlrun] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # variants are nested runs
    assert mlrun.info.status == "FINISHED" and mlrun.data.metrics["files.files"] == 200
    assert {"predictions.parquet", "report.json"} <= {a.path for a in mlflow.list_artifacts(mlrun.info.run_id)}
    assert mlflow.search_model_versions(), "the pipeline registered no champion model on the MLflow server"


def test_gpu_pool_builds_the_model_on_the_worker_and_reuses_its_class_champion(deployed, gpu_worker, cpu_worker,
                                                                              prefect_server, tmp_path):
    """infer.pool=gpu: prepare and optimize run in the GPU deployment, for the worker's hardware, into model-gpu/;
    the pipeline builds nothing. The champion is registered under the worker's class in the work directory's SQLite
    store (on the volume both workers share), and the next run's worker reuses it. On this CPU-only machine the
    "GPU" worker detects a CPU, so it builds and selects CPU variants: right for a GPU pool without a GPU."""
    from mlflow.tracking import MlflowClient

    from flows.tracking_models import class_alias_of

    logs = worker_logs(cpu_worker, gpu_worker)
    config = {"demo": {"n": 200}, "prepare": {"parity_samples": 32}, "refine": {"enabled": False},
              "optimize": {"variants": ["fp32", "int8-dynamic"], "eval_samples": 32, "latency_runs": 5,
                           "time_budget_s": 5},
              "review": {"enabled": False}, "report": {"validation": "warn"}, "infer": {"pool": "gpu"},
              "tracking": {"experiment": "helios-gpu-build", "system_metrics_s": None}}
    with prefect_client(prefect_server.url) as client:
        first, first_gpu = run_pipeline(client, {**config, "out": str(tmp_path / "first")}, logs)
        second, second_gpu = run_pipeline(client, {**config, "out": str(tmp_path / "second")}, logs)
        stages = {name: stages_run_by(client, r.id) for name, r in
                  (("first", first), ("first_gpu", first_gpu), ("second", second), ("second_gpu", second_gpu))}
    assert {"prepare", "optimize"} <= stages["first_gpu"], stages
    assert not {"prepare", "optimize"} & (stages["first"] | stages["second"] | stages["second_gpu"]), stages
    report = json.loads((tmp_path / "first" / "report.json").read_text())
    worker_class = report["worker"]["hardware"]["hardware_class"]
    assert report["model"]["hardware_class"] == worker_class and report["worker"]["stages"]["optimize"] > 0
    built = tmp_path / "first" / "model-gpu"
    assert json.loads((built / "optimize.json").read_text())["hardware_class"] == worker_class
    assert {v["name"] for v in report["variants"]} == {"fp32", "int8-dynamic"}
    assert all(Path(v["path"]).parent == built for v in report["variants"])
    assert not list((tmp_path / "first").glob("model/*.onnx"))  # nothing built by the pipeline's own process
    store = MlflowClient(f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}")  # the work directory's default store
    champion = store.get_model_version_by_alias("mnist-cnn", class_alias_of(worker_class))
    assert str(champion.version) == "1"

    again = json.loads((tmp_path / "second" / "report.json").read_text())
    assert again["model"]["reused"]["via"] == class_alias_of(worker_class)
    assert again["model"]["reused"]["version"] == "1" and again["model"]["variant"] == report["model"]["variant"]
    assert not list((tmp_path / "second" / "model-gpu").glob("*.onnx"))  # the registered version, downloaded
    assert again["counts"] == report["counts"]
    assert len(store.search_model_versions("name = 'mnist-cnn'")) == 1  # the reusing run registered nothing


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
