"""infra/ and prefect.yaml agree with each other and with the code; what can be checked without a Docker engine is.

(Running the compose stack and the images needs Docker, which CI does not have: infra/README.md says what was run.)
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from servers import REPO, binary

from flows.deployments import CPU_POOL, GPU_DEPLOYMENT, GPU_POOL, PIPELINE_DEPLOYMENT, RESULTS_BLOCK

INFRA = REPO / "infra"
WORK_MOUNT = "/opt/helios/helios-work"  # $HELIOS_HOME/helios-work: relative run directories resolve here


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(INFRA / "docker-compose.yml")


def test_prefect_yaml_names_match_the_code():
    from prefect.flows import load_flow_from_entrypoint

    deployments = {d["name"]: d for d in load(REPO / "prefect.yaml")["deployments"]}
    for full_name, pool in ((PIPELINE_DEPLOYMENT, CPU_POOL), (GPU_DEPLOYMENT, GPU_POOL)):
        flow_name, name = full_name.split("/")
        spec = deployments[name]
        assert spec["work_pool"]["name"] == pool
        assert load_flow_from_entrypoint(str(REPO / spec["entrypoint"])).name == flow_name
    env = deployments["helios-infer-gpu"]["work_pool"]["job_variables"]["env"]
    assert env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == f"local-file-system/{RESULTS_BLOCK}"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"


def test_pipeline_default_parameters_are_a_valid_config():
    from flows.config import PipelineConfig

    [pipeline] = [d for d in load(REPO / "prefect.yaml")["deployments"] if d["name"] == "helios-pipeline"]
    config = PipelineConfig.model_validate(pipeline["parameters"]["config"])
    assert config.infer.pool == "local" and not Path(config.out).is_absolute()


def test_compose_workers_share_the_work_volume_and_the_gpu_worker_gets_a_gpu(compose):
    services = compose["services"]
    assert {"postgres", "prefect-server", "mlflow", "pushgateway", "prometheus", "setup", "cpu-worker",
            "gpu-worker"} <= set(services)
    anchor = compose["x-helios-worker"]
    for name in ("setup", "cpu-worker", "gpu-worker"):
        volumes = services[name].get("volumes", anchor["volumes"])
        assert f"helios-work:{WORK_MOUNT}" in volumes, name
    gpu = services["gpu-worker"]
    assert gpu["runtime"] == "nvidia"
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def test_compose_builds_point_at_existing_dockerfiles_and_targets(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if not build:
            continue
        dockerfile = (INFRA / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        if "target" in build:
            assert re.search(rf"^FROM .+ AS {build['target']}$", dockerfile.read_text(), re.M), name


@pytest.mark.parametrize("dockerfile", ["Dockerfile.worker", "Dockerfile.worker-gpu"])
def test_worker_images_copy_existing_sources_and_start_their_pool(dockerfile):
    text = (INFRA / dockerfile).read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for source in sources.split():
            assert (REPO / source).exists(), f"{dockerfile} copies {source}, which does not exist"
    pool = GPU_POOL if dockerfile.endswith("gpu") else CPU_POOL
    assert f'"--pool", "{pool}"' in text and "ENV" in text and "HELIOS_HOME=/opt/helios" in text


def test_prometheus_config_is_valid_and_scrapes_compose_services(compose):
    config_path = INFRA / "prometheus" / "prometheus.yml"
    check = subprocess.run([binary("promtool"), "check", "config", str(config_path)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    services = set(compose["services"])
    targets = [t for job in load(config_path)["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    for target in targets:
        host = target.split(":")[0]
        assert host == "localhost" or host in services, f"prometheus.yml scrapes {target}: no such compose service"


def test_kubernetes_gpu_worker_requests_a_gpu_and_workers_share_the_volume():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((INFRA / "k8s" / "helios-workers.yaml")
                                                                               .read_text())}
    for name, pool in (("helios-cpu-worker", CPU_POOL), ("helios-gpu-worker", GPU_POOL)):
        [container] = docs[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
        assert pool in container["args"]
        assert container["volumeMounts"] == [{"name": "helios-work", "mountPath": WORK_MOUNT}]
    [gpu] = docs[("Deployment", "helios-gpu-worker")]["spec"]["template"]["spec"]["containers"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1 and "--limit" in gpu["args"]
    assert docs[("PersistentVolumeClaim", "helios-work")]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kubernetes_manifests_match_the_api_schemas():
    validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate to check schemas")
    for doc in yaml.safe_load_all((INFRA / "k8s" / "helios-workers.yaml").read_text()):
        validate.validate(doc, validate.latest_version(), strict=True)
