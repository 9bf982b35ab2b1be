"""The refine stage's entry: refine the unsure rows of the infer stage's frame, add columns and a report section.

``refine_predictions`` returns the answers kept for exactly this set when there are some (``tasks.refine.answers``:
no file read, no torch), else runs the stage's work (``tasks.refine.work``, imported only then: it loads torch) and
keeps its answers. Pure core: no Prefect or MLflow. ``truth`` (path -> label) only feeds the accuracy figures,
never adaptation.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from helios.frames import arrow_strings
from helios.labels import labels_of
from tasks.refine import answers
from tasks.refine.context import RefineContext
from tasks.refine.state import Outcome
from tasks.refine.stream import content_keys

ADDED = ("ttt_label", "ttt_confidence", "tta_label", "tta_confidence", "refined_label", "refined_confidence",
         "refine_method")


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
                       truth: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Refine the ok rows below ``ctx.cfg.threshold``; return the frame with the refine columns and the report section.

    Added columns: ``ttt_label``/``ttt_confidence`` (adapted model's answer, where it re-inferred), ``tta_label``/
    ``tta_confidence`` (merged TTA answer, where augmented), ``refined_label``/``refined_confidence`` (the stage's
    answer for every ok row; equal to the infer answer where untouched) and ``refine_method``. ``label``,
    ``confidence`` and ``final_stage`` ('refine') change on the rows refinement answered.
    """
    start = time.perf_counter()
    cfg, adapter = ctx.cfg, ctx.adapter
    frame = _empty_columns(predictions.copy(deep=False))  # copy-on-write: only the columns written are copied
    if not cfg.enabled:
        return frame, {"status": "disabled"}
    names = np.array(adapter.labels, dtype=object)
    # in Arrow, not as one Python str per row: at 200,000 files those strs alone were ~40 MB of the stage's peak
    label_all = pc.index_in(arrow_strings(frame["label"]),
                            value_set=pa.array(list(adapter.labels), pa.large_string()))
    usable = np.flatnonzero((frame["status"] == "ok").to_numpy(dtype=bool) & label_all.is_valid().to_numpy(False))
    # a canonical order (by path: Arrow sorts strings by code point, as Python does), so the answers do not depend
    # on the frame's
    paths = arrow_strings(frame["path"]).take(usable)
    order = pc.sort_indices(paths).to_numpy()
    positions, paths = usable[order], paths.take(order)
    ok = frame.index[positions]
    skipped = _unsupported(ctx, len(ok))
    if skipped:
        return frame, {"status": skipped, "routed": 0, "threshold": cfg.threshold, "methods": {}}
    label = label_all.take(positions).to_numpy(False).astype(np.int64)
    confidence = frame["confidence"].to_numpy(dtype=np.float64)[positions]
    frame.loc[ok, "refined_label"] = names[label]  # the label strs themselves, shared
    frame.loc[ok, "refined_confidence"] = confidence
    frame.loc[ok, "refine_method"] = ""
    routed = confidence < cfg.threshold
    hashes = (arrow_strings(frame["content_hash"]).take(positions)
              if "content_hash" in frame else None)
    keys = content_keys(hashes)
    truth_idx = None
    if truth:
        index = {name: i for i, name in enumerate(adapter.labels)}
        truth_idx = np.fromiter((index.get(v, -1) for v in labels_of(truth, paths)), np.int64, len(paths))
    kept_key = (answers.answers_key(ctx, paths, hashes, label, confidence, truth_idx)
                if keys is not None and cfg.reuse_adaptation else None)
    kept = answers.load(ctx.work_dir, kept_key) if kept_key else None
    if kept is not None:
        outcome, created = kept
        _write_back(frame, ok, adapter.labels, outcome)
        return frame, _kept_summary(outcome.summary, created, start)
    from tasks.refine.work import refine_rows  # the methods, and torch

    outcome = refine_rows(ctx, paths, label, confidence, input_root, keys, truth_idx)
    if isinstance(outcome, list):  # the plan's notes: nothing to run
        return frame, {"status": "skipped: " + ("; ".join(outcome) or "refine.methods is empty"),
                       "routed": int(routed.sum()), "threshold": cfg.threshold, "rounds": 0, "methods": {},
                       "reverted": [], "notes": outcome}
    _write_back(frame, ok, adapter.labels, outcome)
    outcome.summary["routed"] = int(routed.sum())
    if kept_key and not outcome.summary.pop("lost", 0):  # a file that no longer decodes may decode again: not kept
        answers.save(ctx.work_dir, kept_key, outcome, time.strftime("%Y-%m-%dT%H:%M:%S"))
    outcome.summary["seconds"] = round(time.perf_counter() - start, 3)
    return frame, outcome.summary


def _kept_summary(summary: dict, created: str, start: float) -> dict:
    """The kept run's report section, saying that its answers were returned as they were. What it said about the
    adaptation's files (new ones, the advice to adapt again) still holds for this same set; that it adapted again,
    or replayed, does not."""
    adaptation = summary.get("adaptation") or {}
    steps = adaptation.get("reused_steps", 0) + adaptation.get("run_steps", 0)
    summary["adaptation"] = {**adaptation, "kept": True, "reused_steps": steps, "run_steps": 0, "answers_kept": created}
    if summary["adaptation"].pop("readapted", None):  # that run adapted to this very set: no file is new to it
        summary["adaptation"].update(new_files=0, new_share=0.0)
    note = (f"the answers kept from {created} were returned (same source model, settings, files and infer answers): "
            "no file read, no torch work, no re-inference")
    stale = ("the adaptation kept", "the answers kept")
    summary["notes"] = [note] + [n for n in summary.get("notes", [])
                                 if not n.startswith(stale) and "adapted again to this set" not in n]
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


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
