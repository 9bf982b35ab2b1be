"""report.html and the markdown summary, from the report dict. Every string from data is escaped."""
from __future__ import annotations

import json
from html import escape
from typing import Any

from tasks.report.derive import skip_reason

SECTIONS = {
    "run": "Run",
    "hardware": "Hardware",
    "variants": "Model variants",
    "stages": "Stage timings",
    "throughput": "Throughput",
    "confidence": "Confidence",
    "refine": "Refinement (TTA / TTT)",
    "review": "LLM review",
    "errors": "Errors",
    "validation": "Data validation",
    "config": "Config",
}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2933;max-width:1100px;margin:0 auto;padding:16px 24px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;border-bottom:1px solid #d9dee3;padding-bottom:4px;margin-top:28px}
nav a{margin-right:12px;color:#3b6ea8;text-decoration:none}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}.card{background:#f3f5f7;border-radius:6px;padding:8px 14px}
.card b{display:block;font-size:18px}.card span{color:#616e7c;font-size:12px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #d9dee3;padding:3px 8px;text-align:left;vertical-align:top;white-space:pre-wrap}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.selected td{background:#fff4e5;font-weight:600}
code,pre{font-family:ui-monospace,Menlo,monospace;font-size:12px;white-space:pre-wrap;word-break:break-all}
.muted{color:#616e7c;font-style:italic}.bad{color:#c0392b;font-weight:600}.good{color:#2e8b57;font-weight:600}
.scroll{overflow-x:auto}img{max-width:100%;height:auto;display:block;margin:8px 0}
"""


HEADERS = {"latency_p50_ms": "p50 ms", "latency_p95_ms": "p95 ms", "latency_p99_ms": "p99 ms",
           "throughput_per_s": "items/s", "size_bytes": "bytes", "best_batch": "best batch", "peak_mem_mb": "peak MB"}


class Html(str):
    """Markup built here from escaped parts; table cells insert it as is."""


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


def _cell(value: Any) -> str:
    if isinstance(value, Html):
        return f"<td>{value}</td>"
    cls = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"<td{cls}>{escape(fmt(value))}</td>"


def table(rows: list[dict], columns: list[str] | None = None, highlight: str | None = None) -> str:
    """An HTML table of dict rows; a row whose ``highlight`` key is true gets the 'selected' class."""
    if not rows:
        return '<p class="muted">none</p>'
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{escape(HEADERS.get(c, c.replace('_', ' ')))}</th>" for c in columns)
    body = "".join(
        f'<tr{" class=selected" if highlight and r.get(highlight) else ""}>' + "".join(_cell(r.get(c)) for c in columns) + "</tr>"
        for r in rows
    )
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


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


def _img(name: str, images: dict[str, str]) -> str:
    if name not in images:
        return ""
    return f'<img data-figure="{escape(name)}" alt="{escape(name)} figure" src="data:image/png;base64,{images[name]}">'


def _skipped(reason: str) -> str:
    return f'<p class="muted">{escape(reason)}</p>'


# Keys with a section of their own, or derived here; every other summary key is shown under "Run".
OWN_KEYS = {"hardware", "recommendation", "config", "counts", "stages", "accuracy", "variants", "throughput", "refine",
            "review", "validation", "run_dir", "generated_at", "headline", "errors", "final_stage_counts", "figures"}


def scalars(section: dict) -> dict:
    """The plain values of a section (numbers, strings, flags), for a one-row overview."""
    return {k: v for k, v in section.items() if not isinstance(v, (dict, list))}


def _run(report: dict, images: dict) -> str:
    extra = {k: v for k, v in report.items() if k not in OWN_KEYS}
    rows = flatten({"run_dir": report.get("run_dir"), "counts": report.get("counts") or {},
                    "final_stage": report.get("final_stage_counts") or {}, **extra})
    return table(rows, ["key", "value"])


def _hardware(report: dict, images: dict) -> str:
    parts = [table(flatten(report.get("hardware") or {}), ["key", "value"])]
    if report.get("recommendation"):
        parts += ["<h3>Recommendation</h3>", table(flatten(report["recommendation"]), ["key", "value"])]
    return "".join(parts)


def _variants(report: dict, images: dict) -> str:
    variants = report.get("variants") or []
    if not variants:
        return _skipped("not run")
    columns = ["name", "selected", "size_bytes", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
               "throughput_per_s", "best_batch", "peak_mem_mb", "agreement", "cosine", "min_cosine", "accuracy",
               "providers", "reason", "error"]
    columns = [c for c in columns if any(v.get(c) is not None for v in variants)]
    return table(variants, columns, highlight="selected") + _img("variants", images)


def _stages(report: dict, images: dict) -> str:
    stages = report.get("stages") or {}
    return _img("stages", images) + table([{"stage": k, "seconds": v} for k, v in stages.items()])


def _throughput(report: dict, images: dict) -> str:
    return _img("throughput", images) if "throughput" in images else _skipped("no throughput points recorded")


def _confidence(report: dict, images: dict) -> str:
    return _img("confidence", images) if "confidence" in images else _skipped("no confidences (no successful predictions)")


def _refine(report: dict, images: dict) -> str:
    refine = report.get("refine")
    if reason := skip_reason(refine):
        return _skipped(reason)
    methods = [{"method": m, **stats} for m, stats in (refine.get("methods") or {}).items()]
    parts = [table([scalars(refine)]), "<h3>Per method</h3>", table(methods), _img("refine_gains", images)]
    mixture = refine.get("mixture") or {}
    if mixture.get("split"):  # a mixed set, refined as two sets
        groups = [{"group": g, **stats} for g, stats in (mixture.get("groups") or {}).items()]
        parts += ["<h3>Mixed set: refined as two groups</h3>", table([scalars(mixture)]), table(groups)]
    if refine.get("per_corruption"):
        rows = [{"corruption": c, **rates} for c, rates in refine["per_corruption"].items()]
        parts += ["<h3>Error rate per corruption</h3>", table(rows), _img("refine_per_corruption", images)]
    return "".join(parts)


def _review(report: dict, images: dict) -> str:
    review = report.get("review")
    if reason := skip_reason(review):
        return _skipped(reason)
    stats = scalars(review)
    per_model = [{"model": m, **v} for m, v in (review.get("per_model") or {}).items()]
    verdicts = table([review.get("verdicts") or {}])
    return (table([stats]) + "<h3>Verdicts</h3>" + verdicts + _img("review_verdicts", images)
            + "<h3>Cost per model</h3>" + table(per_model))


def _errors(report: dict, images: dict) -> str:
    rows = [{"kind": e["kind"], "count": e["count"],
             "examples": Html("<br>".join(f"<code>{escape(visible(x['path']))}</code>: {escape(x['error'])}" for x in e["examples"]))}
            for e in report.get("errors") or []]
    if not rows:
        return '<p class="good">no errors</p>'
    return table(rows)


def _validation(report: dict, images: dict) -> str:
    validation = report.get("validation")
    if not validation or validation.get("mode") == "off":
        return _skipped("skipped: validation off" if validation else "not run")
    if validation.get("success"):
        verdict = '<p class="good">all expectations met</p>'
    else:
        verdict = f'<p class="bad">{len(validation.get("failures") or [])} expectation(s) not met (mode: {escape(fmt(validation.get("mode")))})</p>'
    rows = [{"suite": f.get("suite"), "expectation": f["expectation"], "column": f.get("column"), "details": f["details"],
             "sample rows": "\n".join(json.dumps(r, ensure_ascii=False) for r in f.get("sample_rows") or [])}
            for f in validation.get("failures") or []]
    docs = f"<p>Data Docs: <code>{escape(fmt(validation.get('docs_path')))}</code></p>" if validation.get("docs_path") else ""
    return verdict + (table(rows) if rows else "") + docs


def _config(report: dict, images: dict) -> str:
    text = json.dumps(report.get("config") or {}, indent=2, ensure_ascii=False)
    return f"<details><summary>resolved config</summary><pre>{escape(text)}</pre></details>"


RENDERERS = {"run": _run, "hardware": _hardware, "variants": _variants, "stages": _stages, "throughput": _throughput,
             "confidence": _confidence, "refine": _refine, "review": _review, "errors": _errors,
             "validation": _validation, "config": _config}


def _cards(report: dict) -> str:
    head = report["headline"]
    labels = {"files": "files", "ok": "ok", "error": "errors", "flagged": "flagged", "accuracy_final": "accuracy",
              "throughput_files_per_s": "files/s", "llm_cost_usd": "LLM cost (USD)", "selected_variant": "variant",
              "hardware_class": "hardware class"}
    cards = "".join(f'<div class="card"><b>{escape(fmt(head.get(k)))}</b><span>{escape(v)}</span></div>' for k, v in labels.items())
    accuracy = report.get("accuracy") or {}
    by_stage = " → ".join(f"{escape(k)} {escape(fmt(v))}" for k, v in accuracy.items())
    return f'<div class="cards">{cards}</div>' + (f"<p>accuracy by stage: {by_stage}</p>" if by_stage else "")


def render_html(report: dict, images: dict[str, str]) -> str:
    """The whole self-contained page: inline CSS, figures as data: URIs, no scripts, no external resources."""
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title in SECTIONS.items())
    body = "".join(f'<section id="{key}"><h2>{escape(title)}</h2>{RENDERERS[key](report, images)}</section>'
                   for key, title in SECTIONS.items())
    title = f"Helios run report — {report.get('run_dir', '')}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
            f'<p class="muted">generated {escape(report.get("generated_at", ""))}</p>'
            f"{_cards(report)}<nav>{nav}</nav>{body}</body></html>")


def _md(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


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
    for key in ("refine", "review"):
        if reason := skip_reason(report.get(key)):
            lines += ["", f"**{SECTIONS[key]}**: {_md(reason)}"]
    if html_uri:
        lines += ["", f"Full report: [report.html]({html_uri})"]
    return "\n".join(lines)
