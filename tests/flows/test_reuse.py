"""Reusing a registered version: the class champion on a second run, ``models:/`` URIs, and their errors — the real
pipeline under Prefect's test harness with MLflow on SQLite."""
from __future__ import annotations

import json

import pytest

from flows.reuse import parse_model_uri
from helios.cli.config_file import load_config
from helios.errors import UsageError

SMALL = ("demo.n=120", "optimize.variants=[fp32,int8-dynamic]", "optimize.eval_samples=32", "optimize.latency_runs=5",
         "prepare.parity_samples=32", "review.enabled=false", "refine.enabled=false")


def run(work, name: str, *overrides: str) -> tuple[dict, dict]:
    from flows.pipeline import helios_pipeline

    result = helios_pipeline(load_config(None, [f"out={work / name}", *SMALL, *overrides]))
    return result, json.loads((work / name / "report.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_harness):
    """A first run (optimizes, registers version 1), a second one (reuses it), a third told to re-optimize."""
    work = tmp_path_factory.mktemp("reuse")
    first, second = run(work, "first"), run(work, "second")
    third = run(work, "third", "optimize.reuse_champion=false")
    return work, first, second, third


def test_second_run_on_the_class_reuses_its_champion_and_the_report_names_the_version(runs):
    from mlflow.tracking import MlflowClient

    work, (first, first_report), (second, report), _ = runs
    hardware_class = first_report["hardware"]["hardware_class"]
    assert first["reused"] is None and "reused" not in first_report["model"]
    assert (work / "first" / "model" / "model.onnx").is_file()
    reused = report["model"]["reused"]
    assert second["reused"] == reused
    assert (reused["registered_model"], reused["version"]) == ("mnist-cnn", "1")
    assert reused["via"] == f"champion-{hardware_class}" and reused["variant"] == first_report["model"]["variant"]
    assert not (work / "second" / "model" / "model.onnx").exists()  # nothing exported, nothing optimized
    assert [v["name"] for v in report["variants"]] == [reused["variant"]]
    assert report["variants"][0]["reason"].startswith("reused registered version mnist-cnn v1")
    assert report["counts"]["files"] == report["counts"]["ok"] == 120
    assert report["accuracy"]["infer"] == pytest.approx(first_report["accuracy"]["infer"])
    assert report["stages"]["optimize"] < first_report["stages"]["optimize"]
    versions = MlflowClient(second["tracking_uri"]).search_model_versions("name = 'mnist-cnn'")
    assert len(versions) == 2  # the first run's and the third's: the reusing run registered nothing


def test_reoptimize_setting_builds_and_registers_a_new_version(runs):
    from mlflow.tracking import MlflowClient

    _, _, _, (third, report) = runs
    assert third["reused"] is None and "reused" not in report["model"]
    assert len(report["variants"]) == 2
    version = MlflowClient(third["tracking_uri"]).get_model_version("mnist-cnn", "2")
    assert version.tags["helios.run_id"] == third["mlflow_run_id"] and version.tags["helios.source_key"]


def test_model_uri_by_version_and_alias_reuses_that_version(runs):
    work = runs[0]
    by_version, report = run(work, "by-version", "model.name=models:/mnist-cnn/2")
    assert by_version["reused"]["version"] == "2" and by_version["reused"]["via"] == "model URI models:/mnist-cnn/2"
    assert report["counts"]["ok"] == 120 and report["model"]["name"] == "mnist-cnn"
    by_alias, _ = run(work, "by-alias", "model.name=models:/mnist-cnn@champion")
    assert by_alias["reused"]["version"] in {"1", "2"}  # whichever the gate kept as champion


def test_model_uri_that_is_not_registered_names_the_fix(runs):
    with pytest.raises(UsageError, match=r"--model models:/mnist-cnn@nope: no such registered version .*"
                                         r"registered models: mnist-cnn"):
        run(runs[0], "missing", "model.name=models:/mnist-cnn@nope")


def test_champion_of_other_settings_is_not_reused(runs):
    other, report = run(runs[0], "other", "optimize.variants=[fp32]")
    assert other["reused"] is None and [v["name"] for v in report["variants"]] == ["fp32"]


@pytest.mark.parametrize("uri, expected", [
    ("models:/mnist-cnn@champion-cpu-avx2-2c", ("mnist-cnn", "champion-cpu-avx2-2c", None)),
    ("models:/my.model/12", ("my.model", None, "12")),
])
def test_model_uris_parse(uri, expected):
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize("uri", ["models:/", "models:/x", "models:/x/latest", "models:/x@"])
def test_malformed_model_uri_names_both_forms(uri):
    with pytest.raises(UsageError, match="use models:/NAME@ALIAS .* or models:/NAME/VERSION"):
        parse_model_uri(uri)
