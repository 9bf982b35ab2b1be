"""A real Pushgateway receives a Helios run's metrics; a real Prometheus scrapes it with infra's scrape config."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse

import pytest
import yaml

from servers import REPO, Server, binary, free_port, http_get, isolated_env, python_module

from tasks.infer.metrics import PUSH_JOB, serve_metrics


@pytest.fixture
def pushgateway(tmp_path):
    port = free_port()
    server = Server("pushgateway", [binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}"],
                    isolated_env(tmp_path), tmp_path)
    url = f"http://127.0.0.1:{port}"
    server.wait_until_healthy(f"{url}/-/healthy")
    yield url
    server.stop()


def local_scrape_config(pushgateway_url: str) -> dict:
    """infra/prometheus/prometheus.yml with its pushgateway job aimed at the test's Pushgateway, scraped every second."""
    config = yaml.safe_load((REPO / "infra" / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "pushgateway"]
    job["static_configs"] = [{"targets": [pushgateway_url.removeprefix("http://")]}]
    return {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [job]}


@pytest.fixture
def prometheus(tmp_path, pushgateway):
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(local_scrape_config(pushgateway)))
    port = free_port()
    args = [binary("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    server = Server("prometheus", args, isolated_env(tmp_path), tmp_path, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    server.wait_until_healthy(f"{url}/-/ready")
    yield url
    server.stop()


def query(prometheus_url: str, promql: str) -> list[dict]:
    status, body = http_get(f"{prometheus_url}/api/v1/query?query={urllib.parse.quote(promql)}")
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def test_run_metrics_reach_the_pushgateway_and_prometheus(pushgateway, prometheus):
    with serve_metrics(None, pushgateway, grouping={"run": "integration"}) as metrics:
        metrics.record_files("ok", 9)
        metrics.record_files("error", 1)
    status, text = http_get(f"{pushgateway}/metrics")
    assert status == 200
    assert f'helios_files_processed_total{{instance="",job="{PUSH_JOB}",run="integration",status="ok"}} 9' in text

    promql = f'helios_files_processed_total{{job="{PUSH_JOB}",run="integration"}}'
    deadline, samples = time.monotonic() + 30, []
    while time.monotonic() < deadline and len(samples) < 3:  # ok, error, reused
        samples = query(prometheus, promql)
        time.sleep(0.5)
    values = {s["metric"]["status"]: float(s["value"][1]) for s in samples}
    assert values == {"ok": 9.0, "error": 1.0, "reused": 0.0}


def test_helios_ops_check_reports_up_and_down_servers(pushgateway, prometheus, tmp_path):
    env = {**isolated_env(tmp_path / "prefect-home"), "COLUMNS": "200"}
    ok = subprocess.run(python_module("helios.cli", "ops", "check", "--pushgateway", pushgateway,
                                      "--prometheus", prometheus), capture_output=True, text=True, timeout=60,
                        env=env, cwd=REPO)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("ok (HTTP 200)") == 2 and "helios home" in ok.stdout
    down = subprocess.run(python_module("helios.cli", "ops", "check", "--mlflow", f"http://127.0.0.1:{free_port()}"),
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert down.returncode == 1 and "down (unreachable" in down.stdout
