"""build_report on a hand-made run: every section, every figure, the JSON and CSV beside the HTML."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.report.config import ReportConfig
from tasks.report.core import build_report
from tasks.report.derive import errors_by_kind, pareto_front
from tasks.report.render import SECTIONS

REPO = Path(__file__).resolve().parents[3]


def figure_names(html: str) -> list[str]:
    return re.findall(r'<img data-figure="([a-z_]+)"[^>]* src="data:image/png;base64,', html)


def test_full_report_has_every_section_figure_and_file(summary, run_dir, expected_figures):
    files = build_report(ReportConfig(), summary, run_dir)

    html = files.html.read_text(encoding="utf-8")
    for title in SECTIONS.values():
        assert f"<h2>{title}</h2>" in html
    assert sorted(figure_names(html)) == sorted(expected_figures)
    report = json.loads(files.json.read_text(encoding="utf-8"))
    assert set(report["figures"]) == expected_figures  # every figure in the HTML has its data in report.json
    assert report["variants"] == summary["variants"] and report["stages"] == summary["stages"]
    assert report["headline"]["selected_variant"] == "int8"
    assert report["figures"]["variants"]["quality_metric"] == "agreement"
    assert sum(report["figures"]["confidence"]["after"]) == 6
    with files.variants_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["fp32", "int8", "int8-<static>"]
    assert rows[1]["providers"] == "CPUExecutionProvider"


def test_html_is_self_contained_and_escapes_data(summary, run_dir):
    html = build_report(ReportConfig(), summary, run_dir).html.read_text(encoding="utf-8")

    assert "<script" not in html  # the file name "<script>alert(1)</script>.png" is shown as text
    assert "odd/&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "odd/new\\nline.png" in html  # a newline in a file name is shown, not taken for a line break
    assert "int8-&lt;static&gt;" in html
    assert not re.search(r"""(src|href)=["']?(https?:|//)|<link|@import|url\(""", html)


def test_errors_by_kind_counts_and_missing_files(run_dir):
    predictions = pd.read_parquet(run_dir / "predictions.parquet").iloc[1:]
    manifest = pd.read_parquet(run_dir / "manifest.parquet")

    errors = errors_by_kind(predictions, manifest, examples=1)

    assert [(e["kind"], e["count"]) for e in errors] == [("decode", 2), ("missing", 1)]
    assert errors[0]["examples"] == [{"path": "odd/<script>alert(1)</script>.png",
                                      "error": "decode: cannot identify image <b>"}]


def test_pareto_front_keeps_points_nothing_beats():
    # (latency, quality): the slow-and-worse point is dominated; ties on both axes dominate nobody.
    assert pareto_front([(4.0, 1.0), (2.0, 0.995), (2.5, 0.97), (2.0, 0.995)]) == [True, True, False, True]


def test_missing_optional_sections_render_as_not_run(summary, run_dir):
    minimal = {k: summary[k] for k in ("hardware", "config", "counts", "stages")}
    minimal["refine"] = {"status": "skipped: refine.enabled is false"}
    pd.read_parquet(run_dir / "predictions.parquet").drop(columns=["infer_confidence", "infer_label"]).to_parquet(
        run_dir / "predictions.parquet", index=False)

    files = build_report(ReportConfig(), minimal, run_dir)

    html = files.html.read_text(encoding="utf-8")
    assert "skipped: refine.enabled is false" in html
    assert html.count('<p class="muted">not run</p>') >= 3  # variants, review, validation
    assert sorted(figure_names(html)) == ["confidence", "stages"]
    assert files.variants_csv is None
    report = json.loads(files.json.read_text(encoding="utf-8"))
    assert report["figures"]["confidence"]["before"] is None


def test_json_only_report_and_required_keys(summary, run_dir):
    files = build_report(ReportConfig(html=False), summary, run_dir)
    assert files.html is None and not (run_dir / "report.html").exists()

    del summary["counts"]
    with pytest.raises(ValueError, match="counts"):
        build_report(ReportConfig(), summary, run_dir)


def test_core_modules_never_import_prefect_or_mlflow():
    code = ("import sys, tasks.report.core, tasks.report.validate, tasks.report.plots, tasks.report.render;"
            "bad = [m for m in ('prefect', 'mlflow', 'great_expectations') if m in sys.modules];"
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"core modules imported {result.stdout.strip()} {result.stderr.strip()}"


def test_failed_variants_and_unbuilt_stages_are_shown_plainly(summary, run_dir):
    summary["variants"].append({"name": "fp16", "latency_p50_ms": None, "agreement": None, "selected": False,
                                "error": "fp16 needs a GPU", "throughput_by_batch": {}, "providers": []})
    summary["refine"] = {"status": "not built: the refine stage is not implemented yet"}
    summary["review"] = {"status": "skipped: no API key in $OPENROUTER_API_KEY", "verdicts": {"agree": 0}}
    summary["prefect"] = {"flow_run_url": "http://127.0.0.1:4200/runs/flow-run/1"}

    files = build_report(ReportConfig(), summary, run_dir)

    report = json.loads(files.json.read_text())
    assert [p["name"] for p in report["figures"]["variants"]["points"]] == ["fp32", "int8", "int8-<static>"]
    assert not {"refine_gains", "review_verdicts"} & set(report["figures"])
    html = files.html.read_text(encoding="utf-8")
    assert "not built: the refine stage is not implemented yet" in html and "fp16 needs a GPU" in html
    assert "skipped: no API key in $OPENROUTER_API_KEY" in html
    assert "prefect.flow_run_url" in html  # keys the report has no section for are listed under Run
    assert len(list(csv.DictReader(files.variants_csv.open()))) == 4


def test_a_mixed_set_shows_both_groups(summary, run_dir):
    mixed = {**summary, "refine": {**summary["refine"], "mixture": {
        "split": True, "shifted": 2, "like_source": 4, "group_shifts": [0.02, 2.6], "multiplier": 1.0,
        "groups": {"like-source": {"items": 4, "status": "done", "rounds": 1, "accuracy_before": 0.99,
                                   "accuracy_after": 0.99},
                   "shifted": {"items": 2, "status": "done", "rounds": 2, "accuracy_before": 0.13,
                               "accuracy_after": 0.63}}}}}
    html = build_report(ReportConfig(), mixed, run_dir).html.read_text(encoding="utf-8")
    assert "Mixed set: refined as two groups" in html and "like-source" in html and "0.63" in html
    plain = build_report(ReportConfig(), summary, run_dir).html.read_text(encoding="utf-8")
    assert "Mixed set" not in plain
