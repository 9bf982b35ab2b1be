"""The refine stage's entry: read the scanned files again, refine the unsure ones, add columns and a report section.

Pure core: no Prefect or MLflow. ``truth`` (path -> label) only feeds the accuracy figures, never adaptation.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from helios.models.base import InputError, ModelAdapter
from tasks.refine.config import RefineConfig
from tasks.refine.rounds import plan_methods, refine_arrays

ADDED = ("ttt_label", "ttt_confidence", "tta_label", "tta_confidence", "refined_label", "refined_confidence",
         "refine_method")


def _load(adapter: ModelAdapter, input_root: Path, paths: list[str], batch_size: int):
    """Model-ready inputs of the files that still decode, and the positions (in ``paths``) of those that do not."""
    decoded, kept, lost = [], [], []
    for i, rel in enumerate(paths):
        try:
            decoded.append(adapter.preprocess((input_root / rel).read_bytes()))
            kept.append(i)
        except (InputError, OSError):
            lost.append(i)
    name = adapter.input_names[0]
    parts = [adapter.collate(decoded[i:i + batch_size])[name] for i in range(0, len(decoded), batch_size)]
    return (np.concatenate(parts) if parts else np.zeros((0,))), np.array(kept, dtype=np.int64), lost


def _empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    for column in ADDED:
        frame[column] = pd.Series([None] * len(frame), dtype="object" if column.endswith(("label", "method")) else "float64",
                                  index=frame.index)
    return frame


def refine_predictions(cfg: RefineConfig, predictions: pd.DataFrame, input_root: Path, adapter: ModelAdapter,
                       onnx_path: Path, work_dir: Path, providers: tuple[str, ...], threads: int,
                       truth: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Refine the ok rows below ``cfg.threshold``; return the frame with the refine columns and the report section.

    Added columns: ``ttt_label``/``ttt_confidence`` (adapted model's answer, where it re-inferred), ``tta_label``/
    ``tta_confidence`` (merged TTA answer, where augmented), ``refined_label``/``refined_confidence`` (the stage's
    answer for every ok row; equal to the infer answer where untouched) and ``refine_method``. ``label``,
    ``confidence`` and ``final_stage`` ('refine') change on the rows refinement answered.
    """
    start = time.perf_counter()
    frame = _empty_columns(predictions.copy())
    if not cfg.enabled:
        return frame, {"status": "disabled"}
    index = {name: i for i, name in enumerate(adapter.labels)}
    usable = frame[(frame["status"] == "ok") & frame["label"].isin(list(index))]
    ok = usable.sort_values("path", kind="stable").index  # a canonical order: the answers do not depend on the frame's
    if len(ok) == 0:
        return frame, {"status": "skipped: no successfully inferred rows to refine", "routed": 0,
                       "threshold": cfg.threshold, "methods": {}}
    if adapter.task != "classifier" and "logits" not in adapter.output_names:
        return frame, {"status": f"skipped: {adapter.task} models have no class scores to refine", "routed": 0,
                       "threshold": cfg.threshold, "methods": {}}
    rows = frame.loc[ok]
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
    if routed.any() or plan.ttt_reason is None:  # a confident set may still be shifted: TTT checks
        x, kept, lost = _load(adapter, Path(input_root), rows["path"].tolist(), cfg.batch_size)
        if lost:
            notes.append(f"{len(lost)} file(s) no longer decode and were left as inferred")
    else:
        x, kept = np.zeros((0,)), np.zeros(0, dtype=np.int64)
    label = rows["label"].map(index).to_numpy(dtype=np.int64)[kept]
    truth_idx = None
    if truth:
        truth_idx = np.array([index.get(truth.get(p), -1) for p in rows["path"].iloc[kept]], dtype=np.int64)
    outcome = refine_arrays(cfg, x, label, conf_all[kept], adapter, Path(onnx_path), Path(work_dir), providers,
                            threads, truth_idx, plan)
    _write_back(frame, ok[kept], adapter.labels, outcome)
    summary = outcome.summary
    summary["routed"] = int(routed.sum())
    summary["notes"] = notes + summary.get("notes", [])
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return frame, summary


def _write_back(frame: pd.DataFrame, rows: pd.Index, labels: tuple[str, ...], outcome) -> None:
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
