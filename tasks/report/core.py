"""build_report: a run's summary + predictions -> report.json, report.html and variants.csv in the run directory.

Never imports Prefect or MLflow; the wrapper in ``task.py`` publishes the files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from helios.catalog import RunCatalog
from tasks.report.config import ReportConfig
from tasks.report.derive import derive_figures, errors_by_kind, headline, jsonable
from tasks.report.figure_cache import cached_figures

REQUIRED_KEYS = ("hardware", "config", "counts", "stages")


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    html: Path | None
    variants_csv: Path | None


READ = ("path", "status", "error", "final_stage", "confidence", "infer_confidence")  # what the report looks at


def read_outputs(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """predictions.parquet (required; the columns in ``READ`` it has: never the vectors of infer.outputs, which the
    report gets only as a summary) and manifest.parquet's paths (when present) of a run directory."""
    import pyarrow.parquet as pq

    catalog = RunCatalog(Path(run_dir))
    predictions_path = catalog.predictions
    if not predictions_path.is_file():
        raise FileNotFoundError(f"{predictions_path} does not exist: the report needs the infer stage's predictions")
    try:
        names = pq.read_schema(predictions_path).names
        predictions = pd.read_parquet(predictions_path, columns=[c for c in READ if c in names])
        manifest_path = catalog.manifest
        manifest = None
        if manifest_path.is_file():  # the report looks only at its paths (files never predicted)
            manifest = pd.read_parquet(manifest_path, columns=[c for c in ("path",) if c in pq.read_schema(manifest_path).names])
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the outputs in {run_dir}: {exc}") from exc
    return predictions, manifest


def assemble_report(cfg: ReportConfig, summary: dict, run_dir: Path,
                    predictions: pd.DataFrame, manifest: pd.DataFrame | None) -> dict:
    """report.json's content: the summary plus headline, errors by kind, outcome counts and every figure's data."""
    missing = [k for k in REQUIRED_KEYS if k not in summary]
    if missing:
        raise ValueError(f"report summary lacks {', '.join(missing)}: the flow must pass {', '.join(REQUIRED_KEYS)}")
    report = {
        **summary,
        "run_dir": str(run_dir),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "headline": headline(summary),
        "errors": errors_by_kind(predictions, manifest, cfg.sample_rows),
        "final_stage_counts": predictions["final_stage"].value_counts(dropna=False).to_dict()
        if "final_stage" in predictions else {},
        "figures": derive_figures(summary, predictions, cfg.histogram_bins),
    }
    return jsonable(report)


def write_variants_csv(variants: list[dict], path: Path) -> Path | None:
    """One row per variant; lists (providers) joined with ';', dicts as JSON. None when no variant was benchmarked."""
    if not variants:
        return None
    frame = pd.DataFrame(variants)
    for column in frame.columns:
        frame[column] = frame[column].map(
            lambda v: ";".join(map(str, v)) if isinstance(v, (list, tuple))
            else json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v)
    frame.to_csv(path, index=False)
    return path


def draw_figures(figures: dict) -> dict[str, str]:
    """Draw figures with matplotlib, imported only here: a JSON-only report, or one whose figures are all kept,
    never pays for it."""
    from tasks.report.plots import render_figures

    return render_figures(figures)


def build_report(cfg: ReportConfig, summary: dict, run_dir: Path) -> ReportFiles:
    """Write report.json (always), report.html (when ``cfg.html``) and variants.csv (when there are variants)."""
    run_dir = Path(run_dir)
    predictions, manifest = read_outputs(run_dir)
    report = assemble_report(cfg, summary, run_dir, predictions, manifest)
    catalog = RunCatalog(run_dir)
    json_path = catalog.report_json
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    html_path = None
    if cfg.html:
        from tasks.report.render import render_html

        html_path = catalog.report_html
        figures = cached_figures(report["figures"], catalog.figures, draw_figures)
        html_path.write_text(render_html(report, figures), encoding="utf-8")
    csv_path = write_variants_csv(report.get("variants") or [], catalog.variants_csv)
    return ReportFiles(json=json_path, html=html_path, variants_csv=csv_path)
