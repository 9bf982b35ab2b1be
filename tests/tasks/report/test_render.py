"""render_html from the templates: every string from data escaped, in every section; the templates are shipped."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import jinja2
import pytest

from tasks.report.render import SECTIONS, TEMPLATES, environment, render_html

REPO = Path(__file__).resolve().parents[3]
EVIL = "<i>'\"&"
SAFE = "&lt;i&gt;&#39;&#34;&amp;"


def hostile_report() -> dict:
    """A report whose every free-text spot, keys included, holds markup."""
    return {
        "run_dir": EVIL, "generated_at": EVIL, "extra": {EVIL: EVIL},
        "headline": {"selected_variant": EVIL},
        "accuracy": {EVIL: 0.5},
        "hardware": {"cpu": {"model": EVIL}}, "recommendation": {"provider": EVIL},
        "variants": [{"name": EVIL, "selected": True, "reason": EVIL}],
        "stages": {EVIL: 1.0},
        "refine": {"status": EVIL, "methods": {EVIL: {"note": EVIL}}, "per_corruption": {EVIL: {"none": 0.1}},
                   "mixture": {"split": True, "groups": {EVIL: {"status": EVIL}}}},
        "review": {"status": "ok", "verdicts": {EVIL: 1}, "per_model": {EVIL: {"note": EVIL}}},
        "errors": [{"kind": EVIL, "count": 1, "examples": [{"path": EVIL + "\n", "error": EVIL}]}],
        "validation": {"mode": EVIL, "success": False, "docs_path": EVIL,
                       "failures": [{"suite": EVIL, "expectation": EVIL, "column": EVIL, "details": EVIL,
                                     "sample_rows": [{EVIL: EVIL}]}]},
        "config": {EVIL: EVIL},
        "drift": {"status": EVIL, "label_psi": 0.3, "label_level": EVIL, "accuracy_change": {EVIL: -0.1},
                  "previous_run": {"mlflow_run_id": EVIL}},
        "costs": {"hardware_class": EVIL, "compute_usd": 0.01},
    }


def test_every_string_from_data_is_escaped_in_every_section():
    html = render_html(hostile_report(), {})

    assert "<i>" not in html and "'\"&<" not in html
    sections = html.split("<section ")[1:]
    assert [s.split('"')[1] for s in sections] == list(SECTIONS)
    figures_only = ('id="throughput"', 'id="confidence"')
    assert all("&lt;i&gt;" in s for s in sections if not s.startswith(figures_only))  # config: JSON adds a backslash
    assert html.count(SAFE) >= 30
    assert SAFE + "\\n" in html  # a newline in a file name is shown as \n


def test_a_figure_is_embedded_only_when_rendered():
    html = render_html(hostile_report(), {"stages": "iVBORw0KGgo="})

    assert '<img data-figure="stages" alt="stages figure" src="data:image/png;base64,iVBORw0KGgo=">' in html
    assert html.count("<img ") == 1
    assert "no throughput points recorded" in html


def test_templates_escape_and_reject_unknown_names():
    env = environment()
    assert env.autoescape is True
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ no_such_name }}").render()


def test_every_template_is_package_data():
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tasks.report"]
    files = [p.relative_to(TEMPLATES.parent).as_posix() for p in TEMPLATES.rglob("*") if p.is_file()]
    assert {f"{key}.html" for key in SECTIONS} <= {Path(f).name for f in files}
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
