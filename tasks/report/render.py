"""report.html and the markdown summary, from the report dict.

The HTML comes from the Jinja2 templates in ``templates/`` (one per section, plus the page, the shared macros and the
CSS), rendered with autoescape: every string from data is escaped. This module holds the values and small helpers
the templates use; the markup lives in the templates.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from tasks.report.derive import skip_reason

TEMPLATES = Path(__file__).resolve().parent / "templates"

SECTIONS = {
    "run": "Run",
    "hardware": "Hardware",
    "variants": "Model variants",
    "stages": "Stage timings",
    "throughput": "Throughput",
    "confidence": "Confidence",
    "refine": "Refinement (TTA / TTT)",
    "review": "LLM review",
    "observe": "Drift and cost",
    "errors": "Errors",
    "validation": "Data validation",
    "config": "Config",
}

# Headline keys shown as cards at the top of the page, with their labels.
CARDS = {"files": "files", "ok": "ok", "error": "errors", "flagged": "flagged", "accuracy_final": "accuracy",
         "throughput_files_per_s": "files/s", "llm_cost_usd": "LLM cost (USD)", "selected_variant": "variant",
         "hardware_class": "hardware class"}

HEADERS = {"latency_p50_ms": "p50 ms", "latency_p95_ms": "p95 ms", "latency_p99_ms": "p99 ms",
           "throughput_per_s": "items/s", "size_bytes": "bytes", "best_batch": "best batch", "peak_mem_mb": "peak MB"}

# The variants table's columns, in order; a column no variant has a value for is left out.
VARIANT_COLUMNS = ["name", "selected", "size_bytes", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                   "throughput_per_s", "best_batch", "peak_mem_mb", "agreement", "cosine", "min_cosine", "accuracy",
                   "providers", "reason", "error"]

# Keys with a section of their own, or derived here; every other summary key is shown under "Run".
OWN_KEYS = {"hardware", "recommendation", "config", "counts", "stages", "accuracy", "variants", "throughput", "refine",
            "review", "validation", "drift", "costs", "worker", "run_dir", "generated_at", "headline", "errors", "final_stage_counts", "figures"}


def visible(text: str) -> str:
    """Control characters in file names shown as escapes, so a newline in a name cannot pass for two names."""
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def fmt(value: Any) -> str:
    """A short human form of a number or value: 4 significant digits, thousands separators, '–' for None."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value)


def header(column: str) -> str:
    """A table column's heading: a short label for known keys, else the key with spaces for underscores."""
    return HEADERS.get(column, column.replace("_", " "))


def columns_of(rows: list[dict]) -> list[str]:
    """Every key of the rows, in first-seen order: the columns of a table of those rows."""
    return list(dict.fromkeys(k for r in rows for k in r))


def flatten(data: dict, prefix: str = "") -> list[dict]:
    """Nested dicts as dotted key/value rows; lists of dicts numbered (gpus.0.name)."""
    rows = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                rows.extend(flatten(item, f"{name}.{i}."))
        else:
            rows.append({"key": name, "value": value})
    return rows


def scalars(section: dict) -> dict:
    """The plain values of a section (numbers, strings, flags), for a one-row overview."""
    return {k: v for k, v in section.items() if not isinstance(v, (dict, list))}


def keyed(mapping: dict, name: str, value_name: str | None = None) -> list[dict]:
    """A dict as table rows, each key put first under ``name``, followed by its dict's items (methods, groups,
    models) or, with ``value_name``, by its value under that name (stage -> seconds)."""
    if value_name:
        return [{name: key, value_name: value} for key, value in mapping.items()]
    return [{name: key, **values} for key, values in mapping.items()]


def run_rows(report: dict) -> list[dict]:
    """The Run section's key/value rows: run dir, counts, final stages and every key no other section shows."""
    extra = {k: v for k, v in report.items() if k not in OWN_KEYS}
    return flatten({"run_dir": report.get("run_dir"), "counts": report.get("counts") or {},
                    "final_stage": report.get("final_stage_counts") or {}, **extra})


def variant_columns(variants: list[dict]) -> list[str]:
    """The variants table's columns that at least one variant has a value for."""
    return [c for c in VARIANT_COLUMNS if any(v.get(c) is not None for v in variants)]


def failure_rows(failures: list[dict]) -> list[dict]:
    """Failed expectations as table rows, their sample rows as one JSON line each."""
    return [{"suite": f.get("suite"), "expectation": f["expectation"], "column": f.get("column"), "details": f["details"],
             "sample rows": "\n".join(json.dumps(r, ensure_ascii=False) for r in f.get("sample_rows") or [])}
            for f in failures]


def pretty_json(value: Any) -> str:
    """Indented JSON, non-ASCII kept as is (the resolved config)."""
    return json.dumps(value, indent=2, ensure_ascii=False)


@cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates: autoescape on, an unknown name an error."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=fmt, visible=visible, header=header, pretty_json=pretty_json)
    env.globals.update(sections=SECTIONS, cards=CARDS, skip_reason=skip_reason, columns_of=columns_of,
                       flatten=flatten, scalars=scalars, keyed=keyed, run_rows=run_rows,
                       variant_columns=variant_columns, failure_rows=failure_rows)
    return env


def render_html(report: dict, images: dict[str, str]) -> str:
    """The whole self-contained page: inline CSS, figures as data: URIs, no scripts, no external resources."""
    return environment().get_template("page.html").render(report=report, images=images)


def _md(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def observe_markdown(report: dict) -> list[str]:
    """Drift (PSI against the previous successful run) and cost lines of the markdown summary."""
    drift, costs = report.get("drift") or {}, report.get("costs") or {}
    lines = []
    if drift.get("status") == "compared":
        lines += ["", f"**Drift** (PSI vs the previous run): labels {_md(drift.get('label_psi'))} "
                      f"({_md(drift.get('label_level'))}), confidence {_md(drift.get('confidence_psi'))} "
                      f"({_md(drift.get('confidence_level'))})"]
    if costs:
        lines += ["", f"**Cost** (USD): compute {_md(costs.get('compute_usd'))}, LLM {_md(costs.get('llm_usd'))}, "
                      f"per 1,000 files {_md(costs.get('total_per_1k_files_usd'))}"]
    return lines


def render_markdown(report: dict, html_uri: str | None) -> str:
    """A one-screen summary for the Prefect UI: headline, accuracy, stage times, errors, validation, where the HTML is."""
    head = report["headline"]
    lines = ["# Helios run report", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_md(v)} |" for k, v in head.items()]
    lines += [f"| accuracy ({_md(k)}) | {_md(v)} |" for k, v in (report.get("accuracy") or {}).items()]
    lines += ["", "## Stage timings (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in (report.get("stages") or {}).items()]
    errors = report.get("errors") or []
    lines += ["", "## Errors", ""] + ([f"- **{_md(e['kind'])}**: {e['count']}" for e in errors] or ["none"])
    validation = report.get("validation") or {}
    if validation.get("mode") not in (None, "off"):
        state = "passed" if validation.get("success") else f"FAILED ({len(validation.get('failures') or [])} expectations)"
        lines += ["", f"**Validation**: {state}"]
    lines += observe_markdown(report)
    for key in ("refine", "review"):
        if reason := skip_reason(report.get(key)):
            lines += ["", f"**{SECTIONS[key]}**: {_md(reason)}"]
    if html_uri:
        lines += ["", f"Full report: [report.html]({html_uri})"]
    return "\n".join(lines)
