"""The report stage as a Prefect task: validate, build the report, publish it as artifacts with keys."""
from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from tasks.report.config import ReportConfig
from tasks.report.core import build_report
from tasks.report.render import render_markdown
from tasks.report.summary import RunSummary
from tasks.report.validate import ValidationFailed, format_failures, validate_outputs

VARIANT_COLUMNS = ("name", "selected", "latency_p50_ms", "latency_p95_ms", "throughput_per_s", "best_batch",
                   "agreement", "cosine", "accuracy", "size_bytes", "reason")


def variant_rows(variants: list[dict]) -> list[dict]:
    """The variants table shown in the Prefect UI (a row saying so when the optimize stage did not run)."""
    if not variants:
        return [{"name": "no variants: the optimize stage did not run"}]
    columns = [c for c in VARIANT_COLUMNS if any(v.get(c) is not None for v in variants)]
    return [{c: v.get(c) for c in columns} for v in variants]


@task(name="report")
def report_stage(cfg: ReportConfig, summary: RunSummary, run_dir: str, labels: tuple[str, ...]) -> dict:
    """Validate the outputs, write report.json/.html and variants.csv, create the artifacts; raise ValidationFailed
    after publishing when validation is 'fail' and an expectation is not met."""
    logger = get_run_logger()
    run_path = Path(run_dir)
    validation = validate_outputs(cfg, run_path, labels)
    files = build_report(cfg, {**summary.to_dict(), "validation": validation.to_dict(cfg.validation)}, run_path)
    report = json.loads(files.json.read_text(encoding="utf-8"))
    html_uri = files.html.resolve().as_uri() if files.html else None
    create_markdown_artifact(key="helios-report", markdown=render_markdown(report, html_uri),
                             description="Helios run summary")
    create_table_artifact(key="helios-variants", table=variant_rows(report.get("variants") or []),
                          description="Model variants benchmarked by the optimize stage")
    if html_uri:
        create_link_artifact(key="helios-report-html", link=html_uri, link_text="report.html",
                             description="The full report (self-contained HTML) in the run directory")
    if not validation.success:
        if cfg.validation == "fail":
            raise ValidationFailed(validation)
        logger.warning(format_failures(validation))
    return {
        "report_json": str(files.json),
        "report_html": str(files.html) if files.html else None,
        "variants_csv": str(files.variants_csv) if files.variants_csv else None,
        "data_docs": str(validation.docs_path) if validation.docs_path else None,
        "validation": cfg.validation,
        "validation_success": validation.success,
        "validation_failures": validation.failures,
    }
