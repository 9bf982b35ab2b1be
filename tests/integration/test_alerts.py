"""Alert rules and dashboard: promtool unit tests of every rule, the dashboard's queries against what Helios exports,
the compose stack and the Kubernetes kustomization shipping both, and one live evaluation: a real `helios run` and a
failed one push to a real Pushgateway, a real Prometheus scrapes it and fires HeliosRunFailed."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
import yaml

from servers import REPO, Server, binary, free_port, http_get, isolated_env, python_module
from test_metrics_servers import local_scrape_config, pushgateway, query  # noqa: F401 (pushgateway is a fixture)

from tasks.report.run_metrics import RUN_METRICS

INFRA = REPO / "infra"
ALERTS = INFRA / "prometheus" / "alerts.yml"
DASHBOARD = INFRA / "grafana" / "dashboards" / "helios.json"


def alert_names() -> set[str]:
    return {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}


def test_every_alert_rule_passes_its_promtool_unit_test():
    tests = yaml.safe_load((INFRA / "prometheus" / "alerts.test.yml").read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert tested == alert_names(), "every rule needs a promtool test case where it fires"
    run = subprocess.run([binary("promtool"), "test", "rules", "alerts.test.yml"], cwd=INFRA / "prometheus",
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def exported_metrics() -> set[str]:
    """Every metric name Helios pushes: the run-level set and the infer stage's (with their sample suffixes)."""
    from tasks.infer.metrics import RunMetrics

    infer = {s.name for family in RunMetrics().registry.collect() for s in family.samples}
    return set(RUN_METRICS) | infer


def test_every_dashboard_panel_queries_metrics_helios_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_metrics()
    datasource = yaml.safe_load((INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert len(dashboard["panels"]) >= 8
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bhelios_[a-z0-9_]+", re.sub(r'"[^"]*"', "", target["expr"])))  # not label values
            assert names and names <= exported, f"{panel['title']}: {names - exported} are not exported"
            assert target["datasource"]["uid"] == datasource["datasources"][0]["uid"]


def test_compose_and_kubernetes_ship_the_rules_and_the_dashboard():
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in compose["prometheus"]["volumes"]
    for config in ("prometheus.yml", "prometheus-local.yml"):
        assert yaml.safe_load((INFRA / "prometheus" / config).read_text())["rule_files"] == ["alerts.yml"]
    grafana = compose["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    provider = yaml.safe_load((INFRA / "grafana" / "provisioning" / "dashboards" / "helios.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    kustomization = yaml.safe_load((INFRA / "kustomization.yaml").read_text())
    files = [f for gen in kustomization["configMapGenerator"] for f in gen["files"]]
    assert sorted(files) == ["grafana/dashboards/helios.json", "prometheus/alerts.yml"]
    assert all((INFRA / r).is_file() for r in kustomization["resources"] + files)
    if shutil.which("kubectl"):  # render it as `kubectl apply -k infra/` would
        rendered = subprocess.run(["kubectl", "kustomize", str(INFRA)], capture_output=True, text=True, timeout=60)
        assert rendered.returncode == 0, rendered.stderr
        maps = {d["metadata"]["name"]: d for d in yaml.safe_load_all(rendered.stdout) if d["kind"] == "ConfigMap"}
        assert maps["helios-prometheus-rules"]["data"]["alerts.yml"] == ALERTS.read_text()
        assert json.loads(maps["helios-grafana-dashboards"]["data"]["helios.json"]) == json.loads(DASHBOARD.read_text())


@pytest.fixture
def prometheus_with_rules(tmp_path, pushgateway):  # noqa: F811
    config = {**local_scrape_config(pushgateway), "rule_files": [str(ALERTS)]}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    server = Server("prometheus", [binary("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{port}"], isolated_env(tmp_path), tmp_path, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    server.wait_until_healthy(f"{url}/-/ready")
    yield url
    server.stop()


def helios_run(tmp_path, prefect_api: str, *args: str) -> subprocess.CompletedProcess:
    """``helios run`` against the session's real Prefect server (``prefect_api``): no temporary server to start and
    migrate per run, which cost a busy 2-core CI machine about a minute each."""
    env = isolated_env(tmp_path / "prefect-home", HELIOS_LOG_FORMAT="json", COLUMNS="200", PREFECT_API_URL=prefect_api)
    return subprocess.run(python_module("helios.cli", "run", "--out", str(tmp_path / "work" / "run"), *args),
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)


def wait_for(prometheus: str, promql: str, timeout_s: float = 60) -> list[dict]:
    deadline, found = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline and not found:
        found = query(prometheus, promql)
        time.sleep(0.5)
    return found


def test_a_real_run_and_a_failed_one_reach_prometheus_and_fire_the_failure_alert(pushgateway, prometheus_with_rules,  # noqa: F811
                                                                                   prefect_server, tmp_path):
    ok = helios_run(tmp_path, prefect_server.url, "--pushgateway", pushgateway, "--set", "demo.n=200",
                    "--set", "review.enabled=false", "--set", "optimize.variants=[fp32]", "--set", "optimize.latency_runs=5",
                    "--set", "refine.tent_epochs=1")  # every stage runs and reports; one TENT pass is enough for that
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-4000:]
    lines = [json.loads(line) for line in ok.stderr.splitlines() if line.startswith("{")]
    assert lines and all(line["run"] == "run" for line in lines)  # HELIOS_LOG_FORMAT=json: one object a line
    staged = [line for line in lines if line["stage"] in ("detect", "prepare", "optimize", "refine", "review", "report")]
    assert staged and all(line["flow_run_id"] for line in staged)
    _, pushed = http_get(f"{pushgateway}/metrics")
    for name in ("helios_last_success_timestamp_seconds", "helios_stage_duration_seconds", "helios_run_files",
                 "helios_accuracy", "helios_compute_cost_usd", "helios_model_info", "helios_files_processed_total"):
        assert f"\n{name}{{" in pushed, name
    assert wait_for(prometheus_with_rules, 'helios_last_run_status{job="helios",run="run"} == 1')
    assert not query(prometheus_with_rules, 'ALERTS{alertname=~"HeliosRunFailed|HeliosNoRecentSuccess"}')

    (tmp_path / "empty").mkdir()
    failed = helios_run(tmp_path, prefect_server.url, "--pushgateway", pushgateway, "--input", str(tmp_path / "empty"))
    assert failed.returncode != 0
    firing = wait_for(prometheus_with_rules, 'ALERTS{alertname="HeliosRunFailed",alertstate="firing"}')
    assert firing and firing[0]["metric"]["job"] == "helios" and firing[0]["metric"]["run"] == "run"
    # the failure was added to the group, not put over it: the last success is still there for the staleness alert
    assert query(prometheus_with_rules, 'helios_last_success_timestamp_seconds{job="helios",run="run"}')
    assert query(prometheus_with_rules, 'helios_last_failure_timestamp_seconds{job="helios",run="run"}')
    status, rules = http_get(f"{prometheus_with_rules}/api/v1/rules")
    loaded = {r["name"]: r["health"] for g in json.loads(rules)["data"]["groups"] for r in g["rules"]}
    assert status == 200 and set(loaded) == alert_names() and set(loaded.values()) == {"ok"}
