"""What the report derives from a run: headline numbers, errors by kind, and the data behind every figure.

Pure functions over the flow's summary dict and the predictions/manifest frames; no plotting, no files.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from helios.errors import error_kind
from helios.frames import is_in

SKIP_PREFIXES = ("skipped", "not run", "not built", "disabled", "off")


def skip_reason(section: Any) -> str | None:
    """``"not run"`` when a section is missing or empty, its status when that says skipped/not run, else None."""
    if not section:
        return "not run"
    if isinstance(section, dict):
        status = str(section.get("status") or "")
        if status.lower().startswith(SKIP_PREFIXES):
            return status
    return None


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars to Python, NaN/inf to None, paths and other objects to str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def measured(variants: list[dict]) -> list[dict]:
    """The variants that were benchmarked (a variant that failed to build has no latency)."""
    return [v for v in variants if _number(v.get("latency_p50_ms"))]


def quality_metric(variants: list[dict]) -> str | None:
    """The quality column every measured variant has: accuracy (labels given), agreement (classifiers), cosine (embedders)."""
    for key in ("accuracy", "agreement", "cosine"):
        if variants and all(_number(v.get(key)) for v in variants):
            return key
    return None


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (latency, quality) points: True where no other point is as fast and as good, and strictly better in one."""
    def dominated(i: int) -> bool:
        lat, q = points[i]
        return any(ol <= lat and oq >= q and (ol < lat or oq > q) for j, (ol, oq) in enumerate(points) if j != i)

    return [not dominated(i) for i in range(len(points))]


def errors_by_kind(predictions: pd.DataFrame, manifest: pd.DataFrame | None, examples: int) -> list[dict]:
    """Error rows grouped by kind (``helios.errors.error_kind``), with example paths; plus manifest files never predicted."""
    rows: list[dict] = []
    if "status" in predictions and "error" in predictions:
        failed = predictions[predictions["status"] != "ok"]
        messages = failed["error"].fillna("unknown: no error message").astype(str)
        kinds = messages.map(error_kind)
        for kind, group in failed.assign(_kind=kinds, _msg=messages).groupby("_kind", sort=False):
            rows.append({
                "kind": kind,
                "count": int(len(group)),
                "examples": [{"path": str(p), "error": m} for p, m in zip(group["path"][:examples], group["_msg"][:examples])],
            })
    if manifest is not None and "path" in manifest and "path" in predictions:
        missing = manifest.loc[~is_in(manifest["path"], predictions["path"]), "path"]
        if len(missing):
            rows.append({
                "kind": "missing",
                "count": int(len(missing)),
                "examples": [{"path": str(p), "error": "in the manifest but no prediction row"} for p in missing[:examples]],
            })
    return sorted(rows, key=lambda r: -r["count"])


def headline(summary: dict) -> dict:
    """The numbers a person reads first; the same names the flow logs to MLflow."""
    counts = summary.get("counts") or {}
    accuracy = summary.get("accuracy") or {}
    points = summary.get("throughput") or []
    rate = summary.get("files_per_s")
    if rate is None and points and points[-1].get("t"):
        rate = points[-1]["files"] / points[-1]["t"]
    selected = [v["name"] for v in summary.get("variants") or [] if v.get("selected")]
    review = summary.get("review") or {}
    return {
        "files": counts.get("files"),
        "ok": counts.get("ok"),
        "error": counts.get("error"),
        "flagged": counts.get("flagged"),
        "accuracy_final": list(accuracy.values())[-1] if accuracy else None,
        "throughput_files_per_s": rate,
        "llm_cost_usd": review.get("cost_usd"),
        "selected_variant": selected[0] if selected else None,
        "hardware_class": ((summary.get("model") or {}).get("hardware_class")  # where the variant was selected
                           or (summary.get("hardware") or {}).get("hardware_class")),
    }


def variants_figure(variants: list[dict]) -> dict | None:
    variants = measured(variants)
    metric = quality_metric(variants)
    if metric is None:
        return None
    front = pareto_front([(v["latency_p50_ms"], v[metric]) for v in variants])
    return {
        "quality_metric": metric,
        "points": [
            {"name": v["name"], "latency_p50_ms": v["latency_p50_ms"], "throughput_per_s": v.get("throughput_per_s"),
             "quality": v[metric], "pareto": on_front, "selected": bool(v.get("selected"))}
            for v, on_front in zip(variants, front)
        ],
    }


def stages_figure(stages: dict[str, float]) -> dict | None:
    bars, start = [], 0.0
    for name, seconds in stages.items():
        bars.append({"stage": name, "start": start, "seconds": float(seconds)})
        start += float(seconds)
    return {"bars": bars, "total_s": start} if bars else None


def confidence_figure(predictions: pd.DataFrame, bins: int) -> dict | None:
    ok = predictions[predictions["status"] == "ok"] if "status" in predictions else predictions
    if "confidence" not in ok or ok["confidence"].dropna().empty:
        return None
    edges = np.linspace(0.0, 1.0, bins + 1)

    def histogram(column: str) -> list[int]:
        values = pd.to_numeric(ok[column], errors="coerce").dropna().clip(0.0, 1.0)
        return np.histogram(values, bins=edges)[0].tolist()

    before = histogram("infer_confidence") if "infer_confidence" in ok and ok["infer_confidence"].notna().any() else None
    return {"bin_edges": edges.round(6).tolist(), "before": before, "after": histogram("confidence")}


def refine_figures(refine: dict) -> dict:
    figures: dict[str, dict] = {}
    methods = refine.get("methods") or {}
    if methods:
        names = list(methods)
        figures["refine_gains"] = {
            "methods": names,
            **{key: [methods[m].get(key) for m in names] for key in ("accuracy_before", "accuracy_after", "touched", "changed")},
        }
    per_corruption = refine.get("per_corruption") or {}
    if per_corruption:
        corruptions = list(per_corruption)
        names = list(dict.fromkeys(m for rates in per_corruption.values() for m in rates))
        figures["refine_per_corruption"] = {
            "corruptions": corruptions,
            "methods": names,
            "error_rate": [[per_corruption[c].get(m) for c in corruptions] for m in names],
        }
    return figures


def derive_figures(summary: dict, predictions: pd.DataFrame, bins: int) -> dict[str, dict]:
    """The data of every figure the HTML shows, keyed by figure name; a figure without data is left out."""
    figures: dict[str, dict | None] = {
        "variants": variants_figure(summary.get("variants") or []),
        "stages": stages_figure(summary.get("stages") or {}),
        "confidence": confidence_figure(predictions, bins),
    }
    points = summary.get("throughput") or []
    if points:
        figures["throughput"] = {"t": [p["t"] for p in points], "files": [p["files"] for p in points]}
    if skip_reason(summary.get("refine")) is None:
        figures.update(refine_figures(summary["refine"]))
    review = summary.get("review")
    if skip_reason(review) is None and sum((review.get("verdicts") or {}).values()):
        figures["review_verdicts"] = {"verdicts": dict(review["verdicts"])}
    return {name: data for name, data in figures.items() if data}
