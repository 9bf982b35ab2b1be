"""Drift between runs of one deployment: this run's answers against the previous successful run's.

Two distributions are compared with the population stability index (PSI), the measure credit-risk and MLOps
monitoring use for a binned distribution that should stay put:

    PSI = sum over bins of (p_now - p_before) * ln(p_now / p_before)

with each share floored at ``EPSILON`` so an empty bin stays finite. It is symmetric, 0 for identical distributions,
and the usual reading is: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one. The bins are
the predicted labels (the final answer of every ok row) and ten equal confidence bins over [0, 1]. The refine stage's
own measure of input shift (BatchNorm statistics of the files against the training data) is carried beside them.

Pure functions over the predictions frame and plain dicts: the flow keeps the previous run's ``distribution`` as JSON.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

EPSILON = 1e-4
CONFIDENCE_EDGES = tuple(round(i / 10, 1) for i in range(11))
PSI_MODERATE, PSI_SIGNIFICANT = 0.1, 0.25


def psi(before: Sequence[float], now: Sequence[float], epsilon: float = EPSILON) -> float:
    """The population stability index of two binned counts (same bins, same order); 0.0 when both are empty."""
    b, n = np.asarray(before, dtype=float), np.asarray(now, dtype=float)
    if b.shape != n.shape:
        raise ValueError(f"PSI needs the same bins on both sides, got {b.size} and {n.size}")
    if b.sum() == 0 or n.sum() == 0:
        return 0.0
    p, q = np.clip(b / b.sum(), epsilon, None), np.clip(n / n.sum(), epsilon, None)
    return float(np.sum((q - p) * np.log(q / p)))


def distribution(predictions: pd.DataFrame) -> dict[str, Any]:
    """The run's answer distribution: label counts and a confidence histogram over the ok rows' final answers."""
    ok = predictions.loc[predictions["status"] == "ok"] if "status" in predictions else predictions
    labels = ok["label"].dropna().astype(str).value_counts().sort_index()
    confidence = pd.to_numeric(ok["confidence"], errors="coerce").dropna().clip(0.0, 1.0).to_numpy()
    counts, _ = np.histogram(confidence, bins=CONFIDENCE_EDGES)
    return {"n": int(len(ok)), "labels": {str(k): int(v) for k, v in labels.items()},
            "confidence_edges": list(CONFIDENCE_EDGES), "confidence_counts": [int(c) for c in counts],
            "mean_confidence": float(confidence.mean()) if confidence.size else None}


def label_psi(before: dict[str, int], now: dict[str, int]) -> float:
    """PSI over the union of both runs' labels (a label one run never predicted counts 0 there)."""
    keys = sorted(set(before) | set(now))
    return psi([before.get(k, 0) for k in keys], [now.get(k, 0) for k in keys])


def level(value: float | None) -> str | None:
    """'stable', 'moderate' or 'significant' for a PSI value (the thresholds in this module's docstring)."""
    if value is None:
        return None
    return "significant" if value > PSI_SIGNIFICANT else "moderate" if value > PSI_MODERATE else "stable"


def compare_runs(now: dict[str, Any], baseline: dict[str, Any] | None, accuracy: dict[str, float],
                 input_shift: float | None) -> dict[str, Any]:
    """The drift section of a run: PSI of labels and confidence against ``baseline`` (the previous successful
    run's ``baseline_record``), the accuracy change per stage, and the refine stage's input shift."""
    drift: dict[str, Any] = {"input_shift": input_shift, "mean_confidence": now.get("mean_confidence")}
    if not baseline:
        return {"status": "no previous successful run to compare with", **drift}
    before = baseline.get("distribution") or {}
    same_bins = before.get("confidence_edges") == now["confidence_edges"]
    conf = psi(before["confidence_counts"], now["confidence_counts"]) if same_bins else None
    labels = label_psi(before.get("labels") or {}, now["labels"])
    previous = baseline.get("accuracy") or {}
    change = {stage: round(value - previous[stage], 6) for stage, value in accuracy.items()
              if isinstance(previous.get(stage), (int, float)) and not math.isnan(value)}
    return {"status": "compared", **drift, "label_psi": round(labels, 6), "label_level": level(labels),
            "confidence_psi": None if conf is None else round(conf, 6), "confidence_level": level(conf),
            "previous_mean_confidence": before.get("mean_confidence"), "accuracy_change": change,
            "previous_input_shift": baseline.get("input_shift"), "previous_run": baseline.get("run") or {}}


def baseline_record(now: dict[str, Any], accuracy: dict[str, float], input_shift: float | None,
                    run: dict[str, Any]) -> dict[str, Any]:
    """What the next run compares itself with: this run's distribution, accuracy and input shift, and its ids."""
    return {"schema": 1, "distribution": now, "accuracy": dict(accuracy), "input_shift": input_shift, "run": run}
