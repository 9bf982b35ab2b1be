"""A set that mixes files like the training data with strongly shifted ones is refined as two sets.

``domains.shifted_group`` finds the two groups (or says the set is one distribution). Each group then goes through
the same rounds as any set (``rounds.refine_set``) with a fresh copy of the source model and its own gates: a group
of clean files does not look shifted and keeps its answers (TTA still augments its unsure ones); the shifted group
adapts to its own statistics. One ledger covers the whole set, so the report's per-method figures, the compute
budget and the accuracy are over all files. The check itself costs one forward pass per item, charged to the
compute budget and reported under ``mixture``.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

from tasks.refine.config import RefineConfig
from tasks.refine.rounds import Outcome, Plan, _Ledger, refine_set

GROUPS = (("like-source", False), ("shifted", True))


def check(cfg: RefineConfig, plan: Plan, x: np.ndarray, threads: int, ledger: _Ledger) -> tuple[np.ndarray | None, dict]:
    """(mask of the shifted items, facts) for a clear mixture, else (None, facts); the pass is charged to the budget."""
    import torch

    from tasks.refine import domains
    from tasks.refine.ttt import Compute
    from tasks.refine.ttt_step import _torch_threads

    start = time.perf_counter()
    with _torch_threads(threads):
        shifted, facts = domains.shifted_group(plan.module, torch.from_numpy(np.ascontiguousarray(x)),
                                               cfg.batch_size, cfg.ttt_min_shift)
    seconds = time.perf_counter() - start
    ledger.charge("mixture-check", Compute(facts.pop("forward_passes", 0), 0, seconds))
    return shifted, {**facts, **ledger.checks["mixture-check"]}


class _View:
    """The whole set's ledger as one group sees it: the group's arrays are placed into whole-set arrays that hold
    the other items' current answers."""

    def __init__(self, ledger: _Ledger, idx: np.ndarray, current: np.ndarray):
        self.ledger, self.idx, self.current = ledger, idx, current

    def _whole(self, local: np.ndarray) -> np.ndarray:
        whole = self.current.copy()
        whole[self.idx] = local
        return whole

    @property
    def methods(self) -> dict:
        return self.ledger.methods

    def record(self, method, touched, before, after, compute) -> None:
        mask = np.zeros(self.ledger.n, dtype=bool)
        mask[self.idx] = touched
        self.ledger.record(method, mask, self._whole(before), self._whole(after), compute)

    def accuracy(self, labels: np.ndarray) -> float | None:
        return self.ledger.accuracy(self._whole(labels))

    def spent(self) -> float:
        return self.ledger.spent()


def refine_groups(cfg: RefineConfig, x: np.ndarray, label: np.ndarray, confidence: np.ndarray, adapter, onnx_path: Path,
                  work_dir: Path, providers: tuple[str, ...], threads: int, plan: Plan, ledger: _Ledger,
                  shifted: np.ndarray, facts: dict) -> Outcome:
    """Refine each group as its own set and merge the answers, columns and report section."""
    n = len(label)
    merged = Outcome(np.asarray(label).copy(), np.asarray(confidence, dtype=np.float64).copy(),
                     method=np.full(n, "", dtype=object))
    groups = []
    for name, flag in GROUPS:
        idx = np.flatnonzero(shifted == flag)
        own = Plan(plan.policy, copy.deepcopy(plan.module), plan.ttt_reason, [])  # each group starts from the source
        out = refine_set(cfg, x[idx], merged.label[idx], merged.confidence[idx], adapter, onnx_path, work_dir / name,
                         providers, threads, own, _View(ledger, idx, merged.label))
        merged.label[idx], merged.confidence[idx], merged.method[idx] = out.label, out.confidence, out.method
        for key, values in out.columns.items():
            column = merged.columns.setdefault(
                key, np.full(n, -1, dtype=np.int64) if key.endswith("_label") else np.full(n, np.nan))
            column[idx] = values
        groups.append((name, idx, out.summary))
    merged.summary = _summary(cfg, plan, ledger, label, confidence, merged, groups, facts)
    return merged


def _summary(cfg, plan, ledger, label, confidence, merged, groups, facts) -> dict:
    def group_accuracy(idx, labels):
        if ledger.truth is None:
            return None
        truth = ledger.truth[idx]
        known = truth >= 0
        return round(float((labels[idx][known] == truth[known]).mean()), 4) if known.any() else None

    per_group = {name: {"items": int(len(idx)), "status": s["status"], "rounds": s.get("rounds", 0),
                        "shift_score": s.get("shift_score"), "accuracy_before": group_accuracy(idx, label),
                        "accuracy_after": group_accuracy(idx, merged.label)} for name, idx, s in groups}
    counts = {name: len(idx) for name, idx, _ in groups}
    low, high = facts["group_shifts"]
    note = (f"mixed set: {counts['like-source']} files look like the training data (BN shift {low:.3f}) and "
            f"{counts['shifted']} look shifted ({high:.3f}); each group was refined as a set of its own")
    return {
        "status": "done", "routed": int((np.asarray(confidence) < cfg.threshold).sum()), "threshold": cfg.threshold,
        "rounds": max(s.get("rounds", 0) for _, _, s in groups), "methods": ledger.methods,
        "reverted": [f"{name}: {r}" for name, _, s in groups for r in s.get("reverted", [])],
        "notes": [*plan.notes, note, *(f"{name}: {n}" for name, _, s in groups for n in s.get("notes", []))],
        "mixture": {**facts, "groups": per_group},
        "shift_score": per_group["shifted"]["shift_score"],
        "still_below_threshold": int((merged.confidence < cfg.threshold).sum()),
        "multiplier": round(ledger.spent(), 3),
        "accuracy_before": ledger.accuracy(np.asarray(label)), "accuracy_after": ledger.accuracy(merged.label),
    }
