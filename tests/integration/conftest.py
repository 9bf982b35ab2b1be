"""Session fixtures: one real Prefect server and one real MLflow server, each on a free 127.0.0.1 port.

Each lives in its own temporary home (PREFECT_HOME, databases, artifacts) and is reached only through the
environment handed to subprocesses, so neither the user's ~/.prefect nor the test harness of other tests is touched.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests have no packages (importlib mode): make helpers importable

from servers import Server, free_port, isolated_env, python_module, run_cli  # noqa: E402


@dataclass(frozen=True)
class Endpoint:
    url: str
    env: dict[str, str]  # environment for clients of this server (subprocesses)
    home: Path


def null_limit_rejected(api_url: str) -> bool:
    """Prefect 3.8.8's server on FastAPI >= 0.151 answers 422 to the null ``limit`` its own client sends."""
    request = urllib.request.Request(f"{api_url}/flows/filter", data=json.dumps({"limit": None}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as exc:
        return exc.code == 422
    return False


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = isolated_env(home, PREFECT_SERVER_UI_ENABLED="false", PREFECT_API_ENABLE_METRICS="true")
    server = Server("prefect-server", python_module("prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                                    str(port), "--no-ui"), env, home)
    api = f"http://127.0.0.1:{port}/api"
    try:
        server.wait_until_healthy(f"{api}/health")
        if null_limit_rejected(api):
            import fastapi

            pytest.fail(f"fastapi {fastapi.__version__} breaks Prefect 3.8.8's server (422 on a null limit: "
                        "`prefect deploy` and `prefect deployment ls` fail): pin fastapi>=0.139,<0.151")
        yield Endpoint(api, isolated_env(home, PREFECT_API_URL=api), home)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    args = python_module("mlflow", "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                         "--artifacts-destination", (home / "artifacts").as_uri(), "--serve-artifacts",
                         "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    server = Server("mlflow-server", args, isolated_env(home), home)
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_until_healthy(f"{url}/health")
        yield Endpoint(url, isolated_env(home, MLFLOW_TRACKING_URI=url), home)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def deployed(prefect_server) -> Path:
    """Pools, limit and result block made twice (idempotent), then both deployments from prefect.yaml, on the
    session's server: once for test_prefect_deployments and test_dispatch_timeout alike. The result storage's path."""
    from flows.deployments import GPU_LIMIT, GPU_POOL

    results_dir = prefect_server.home / "prefect-results"
    pools = python_module("helios.cli", "ops", "pools", "--results-dir", str(results_dir))
    first, second = run_cli(pools, prefect_server.env), run_cli(pools, prefect_server.env)
    assert f"created work pool {GPU_POOL}" in first or f"work pool {GPU_POOL} exists" in first
    assert f"work pool {GPU_POOL} exists" in second
    assert f"concurrency limit {GPU_LIMIT} exists (1 slots)" in second
    run_cli(python_module("prefect", "--no-prompt", "deploy", "--all"), prefect_server.env)
    return results_dir
