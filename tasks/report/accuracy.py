"""Accuracy of a run's labels after each stage, overall and per demo group, when the true labels are known."""
from __future__ import annotations

import pandas as pd


def accuracy(frame: pd.DataFrame, column: str, truth: dict[str, str] | None) -> float | None:
    """Share of labelled ok rows whose ``column`` equals the true label (error rows count as wrong)."""
    if truth is None or column not in frame:
        return None
    known = frame[frame["path"].isin(truth.keys())]
    if known.empty:
        return None
    expected = known["path"].map(truth)
    return float(((known[column].astype(str) == expected) & (known["status"] == "ok")).mean())


def stage_accuracy(predictions: pd.DataFrame, truth: dict[str, str] | None) -> dict[str, float]:
    """Accuracy of the labels as each stage left them: infer_label, then refined_label where refinement set one,
    then label."""
    refined = predictions.get("refined_label", pd.Series(None, index=predictions.index, dtype=object))
    frame = predictions.assign(_after_refine=refined.fillna(predictions["infer_label"]))
    values = {stage: accuracy(frame, col, truth) for stage, col in
              (("infer", "infer_label"), ("refine", "_after_refine"), ("review", "label"))}
    return {k: v for k, v in values.items() if v is not None}


def group_accuracy(predictions: pd.DataFrame, truth: dict[str, str] | None,
                   groups: dict[str, str] | None) -> dict[str, dict[str, float]] | None:
    """Accuracy after each stage per demo group (clean or the corruption's name), when labels carry groups."""
    if not groups or truth is None:
        return None
    group_of = predictions["path"].map(groups)
    return {name: stage_accuracy(predictions[group_of == name], truth) for name in sorted(group_of.dropna().unique())}


def corruption_errors(per_group: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Error after infer and after refine per group: the report's per-corruption gain table and figure."""
    return {name: {stage: round(1.0 - acc[stage], 4) for stage in ("infer", "refine") if stage in acc}
            for name, acc in per_group.items()}
