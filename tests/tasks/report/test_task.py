"""The report task under a real Prefect API: artifacts with keys, and the fail/warn validation policy."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey,
                                            FlowRunFilter, TaskRunFilter)
from prefect.client.schemas.sorting import ArtifactSort

from tasks.report.config import ReportConfig
from tasks.report.summary import RunSummary
from tasks.report.task import report_stage
from tasks.report.validate import ValidationFailed

KEYS = ["helios-report", "helios-variants", "helios-report-html"]


@flow(name="report-test")
def report_flow(cfg: ReportConfig, summary: dict, run_dir: str, labels: tuple[str, ...]) -> dict:
    typed = RunSummary(**{"input": "in", "labels": None, "model": {"name": "mnist-cnn", "variant": "fp32"},
                          "files_per_s": None, "per_group": None, **summary})
    return report_stage(cfg, typed, run_dir, labels)


def artifacts_of(state) -> dict:
    flow_run_id = state.state_details.flow_run_id
    # Every filter argument is passed: with this stack's server an omitted one is sent as null and rejected (422).
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=KEYS),
                                           flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            flow_run_filter=FlowRunFilter(), task_run_filter=TaskRunFilter(),
            limit=10, offset=0, sort=ArtifactSort.CREATED_DESC)
    return {a.key: a for a in found}


def test_report_task_creates_the_three_artifacts(prefect_harness, summary, run_dir, labels):
    state = report_flow(ReportConfig(), summary, str(run_dir), labels, return_state=True)

    result = state.result()
    assert result["validation_success"] and Path(result["report_html"]).is_file()
    assert Path(result["data_docs"]).is_file() and Path(result["variants_csv"]).is_file()
    artifacts = artifacts_of(state)
    assert set(artifacts) == set(KEYS)
    assert artifacts["helios-report"].type == "markdown"
    assert "# Helios run report" in artifacts["helios-report"].data and "**Validation**: passed" in artifacts["helios-report"].data
    table = json.loads(artifacts["helios-variants"].data)
    assert [row["name"] for row in table] == ["fp32", "int8", "int8-<static>"]
    assert (run_dir / "report.html").resolve().as_uri() in artifacts["helios-report-html"].data


def test_failed_validation_fails_the_task_after_publishing(prefect_harness, summary, run_dir, labels, make_predictions):
    make_predictions().assign(confidence=1.5).to_parquet(run_dir / "predictions.parquet", index=False)

    state = report_flow(ReportConfig(validation="fail"), summary, str(run_dir), labels, return_state=True)

    assert state.is_failed()
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_between\(confidence\)"):
        state.result()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["validation"]["success"] is False  # the report was still written, and shows why
    assert "FAILED" in artifacts_of(state)["helios-report"].data


def test_warn_mode_returns_the_failures(prefect_harness, summary, run_dir, labels, make_predictions):
    make_predictions().assign(label="cat").to_parquet(run_dir / "predictions.parquet", index=False)

    result = report_flow(ReportConfig(validation="warn", html=False), summary, str(run_dir), labels)

    assert result["validation_success"] is False and result["report_html"] is None
    assert {f["column"] for f in result["validation_failures"]} == {"label"}
