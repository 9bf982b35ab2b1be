"""The refine stage's entry: read the scanned files again, refine the unsure ones, add columns and a report section.

``refine_predictions`` works on the infer stage's frame, reading files as it needs them (``tasks.refine.stream``:
a bounded sample for adaptation, chunks for re-inference and TTA) and keeping what reruns can reuse
(``tasks.refine.memo``); ``refine_arrays`` on a model-ready batch (what the evaluation scripts call), where it
chooses to refine the items as one set or, for a clear mixture, as two groups.
Pure core: no Prefect or MLflow. ``truth`` (path -> label) only feeds the accuracy figures, never adaptation.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.refine import memo, mixture
from tasks.refine.context import RefineContext
from tasks.refine.items import Items, capped_batch
from tasks.refine.plan import Plan, plan_methods
from tasks.refine.rounds import refine_set
from tasks.refine.state import Ledger, Outcome
from tasks.refine.stream import content_keys, open_files

ADDED = ("ttt_label", "ttt_confidence", "tta_label", "tta_confidence", "refined_label", "refined_confidence",
         "refine_method")


def refine_arrays(ctx: RefineContext, x: np.ndarray | Items, label: np.ndarray, confidence: np.ndarray,
                  truth: np.ndarray | None = None, plan: Plan | None = None) -> Outcome:
    """Refine items given as a model-ready batch ``x`` (or as ``Items``) with the infer stage's label indices and
    confidences.

    ``truth`` (label indices, -1 unknown) is used only for the accuracy figures of the report. ``plan`` is
    ``plan_methods``'s answer when the caller already asked (it loads the torch module). When the model can be
    adapted, a set that mixes files like the training data with strongly shifted ones is refined as two sets
    (``tasks.refine.mixture``); any other set as one.
    """
    items = x if isinstance(x, Items) else Items.of_array(x)
    n = len(label)
    if n and plan is None:
        plan = plan_methods(ctx.cfg, ctx.adapter)
    batch = capped_batch(ctx.cfg.batch_size, items.item_bytes)
    if batch < ctx.cfg.batch_size:  # large inputs: fewer per forward pass (answers do not depend on it)
        ctx = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update={"batch_size": batch}))
    ledger, facts = Ledger(n, truth), None
    if n and plan.ttt_reason is None:
        shifted, facts = mixture.check(ctx, plan, items, ledger)
        if shifted is not None:
            return mixture.refine_groups(ctx, items, label, confidence, plan, ledger, shifted, facts)
    out = refine_set(ctx, items, label, confidence, plan, ledger)
    if facts is not None:
        out.summary["mixture"] = facts
    return out


def _empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ADDED:
        frame[column] = pd.Series([None] * len(frame), dtype="object" if column.endswith(("label", "method")) else "float64",
                                  index=frame.index)
    return frame


def _unsupported(ctx: RefineContext, rows: int) -> str | None:
    """Why the stage skips before reading any file (no rows, no class scores), or None."""
    if rows == 0:
        return "skipped: no successfully inferred rows to refine"
    if ctx.adapter.task != "classifier" and "logits" not in ctx.adapter.output_names:
        return f"skipped: {ctx.adapter.task} models have no class scores to refine"
    return None


def refine_predictions(ctx: RefineContext, predictions: pd.DataFrame, input_root: Path,
                       truth: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Refine the ok rows below ``ctx.cfg.threshold``; return the frame with the refine columns and the report section.

    Added columns: ``ttt_label``/``ttt_confidence`` (adapted model's answer, where it re-inferred), ``tta_label``/
    ``tta_confidence`` (merged TTA answer, where augmented), ``refined_label``/``refined_confidence`` (the stage's
    answer for every ok row; equal to the infer answer where untouched) and ``refine_method``. ``label``,
    ``confidence`` and ``final_stage`` ('refine') change on the rows refinement answered.
    """
    start = time.perf_counter()
    cfg, adapter = ctx.cfg, ctx.adapter
    frame = _empty_columns(predictions.copy())
    if not cfg.enabled:
        return frame, {"status": "disabled"}
    index = {name: i for i, name in enumerate(adapter.labels)}
    usable = frame[(frame["status"] == "ok") & frame["label"].isin(list(index))]
    ok = usable.sort_values("path", kind="stable").index  # a canonical order: the answers do not depend on the frame's
    skipped = _unsupported(ctx, len(ok))
    if skipped:
        return frame, {"status": skipped, "routed": 0, "threshold": cfg.threshold, "methods": {}}
    rows = frame.loc[ok, [c for c in ("path", "label", "confidence", "content_hash") if c in frame]]  # not a full copy
    frame.loc[ok, "refined_label"] = rows["label"]
    frame.loc[ok, "refined_confidence"] = rows["confidence"].astype("float64")
    frame.loc[ok, "refine_method"] = ""
    conf_all = rows["confidence"].to_numpy(dtype=np.float64)
    routed = conf_all < cfg.threshold
    notes = []
    plan = plan_methods(cfg, adapter)
    if plan.policy is None and plan.ttt_reason is not None:
        return frame, {"status": "skipped: " + ("; ".join(plan.notes) or "refine.methods is empty"),
                       "routed": int(routed.sum()), "threshold": cfg.threshold, "rounds": 0, "methods": {},
                       "reverted": [], "notes": plan.notes}
    label = rows["label"].map(index).to_numpy(dtype=np.int64)
    keys = content_keys(rows)
    items = open_files(ctx, Path(input_root), rows["path"].tolist(), label, keys)
    adaptation = None
    if keys is not None:
        items.memo, adaptation = memo.open_memo(ctx, keys)
    truth_idx = None
    if truth:
        truth_idx = np.array([index.get(truth.get(p), -1) for p in rows["path"]], dtype=np.int64)
    outcome = refine_arrays(ctx, items, label, conf_all, truth_idx, plan)
    if items.lost:
        notes.append(f"{len(items.lost)} file(s) no longer decode and were left as inferred")
    _write_back(frame, ok, adapter.labels, outcome)
    summary = outcome.summary
    summary["routed"] = int(routed.sum())
    if adaptation is not None:
        summary["adaptation"], more = memo.describe(adaptation, items.memo, ctx.cfg)
        notes += more
    summary["notes"] = notes + summary.get("notes", [])
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return frame, summary


def _write_back(frame: pd.DataFrame, rows: pd.Index, labels: tuple[str, ...], outcome: Outcome) -> None:
    """Copy the outcome's arrays into the frame (label indices back to label strings)."""
    names = np.array(labels, dtype=object)

    def as_labels(idx: np.ndarray) -> np.ndarray:
        return np.where(idx >= 0, names[np.clip(idx, 0, None)], None)

    for prefix in ("ttt", "tta"):
        if f"{prefix}_label" in outcome.columns:
            frame.loc[rows, f"{prefix}_label"] = as_labels(outcome.columns[f"{prefix}_label"])
            frame.loc[rows, f"{prefix}_confidence"] = outcome.columns[f"{prefix}_confidence"]
    frame.loc[rows, "refined_label"] = as_labels(outcome.label)
    frame.loc[rows, "refined_confidence"] = outcome.confidence
    frame.loc[rows, "refine_method"] = outcome.method
    answered = rows[outcome.method != ""]
    if len(answered):
        frame.loc[answered, "label"] = frame.loc[answered, "refined_label"]
        frame.loc[answered, "confidence"] = frame.loc[answered, "refined_confidence"].astype(frame["confidence"].dtype)
        frame.loc[answered, "final_stage"] = "refine"
