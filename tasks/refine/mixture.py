"""A set that mixes files like the training data with strongly shifted ones is refined as two sets.

``domains.shifted_group`` finds the two groups (or says the set is one distribution). Each group then goes through
the same rounds as any set (``rounds.refine_set``) with a fresh copy of the source model and its own gates: a group
of clean files does not look shifted and keeps its answers (TTA still augments its unsure ones); the shifted group
adapts to its own statistics. One ledger covers the whole set, so the report's per-method figures, the compute
budget and the accuracy are over all files. The check itself costs one forward pass per item, charged to the
compute budget and reported under ``mixture``; ``core.refine_arrays`` runs the check and chooses one set or two.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import torch

from tasks.refine import domains
from tasks.refine.config import RefineConfig
from tasks.refine.context import RefineContext
from tasks.refine.plan import Plan
from tasks.refine.rounds import refine_set
from tasks.refine.state import Compute, GroupLedger, Ledger, Outcome
from tasks.refine.ttt import torch_threads

GROUPS = (("like-source", False), ("shifted", True))


def check(ctx: RefineContext, plan: Plan, x: np.ndarray, ledger: Ledger) -> tuple[np.ndarray | None, dict]:
    """(mask of the shifted items, facts) for a clear mixture, else (None, facts); the pass is charged to the budget."""
    start = time.perf_counter()
    with torch_threads(ctx.threads):
        shifted, facts = domains.shifted_group(plan.module, torch.from_numpy(np.ascontiguousarray(x)),
                                               ctx.cfg.batch_size, ctx.cfg.ttt_min_shift)
    seconds = time.perf_counter() - start
    ledger.charge("mixture-check", Compute(facts.pop("forward_passes", 0), 0, seconds))
    return shifted, {**facts, **ledger.checks["mixture-check"]}


def refine_groups(ctx: RefineContext, x: np.ndarray, label: np.ndarray, confidence: np.ndarray, plan: Plan,
                  ledger: Ledger, shifted: np.ndarray, facts: dict) -> Outcome:
    """Refine each group (``shifted`` from ``check``) as its own set and merge the answers, columns and report
    section; each group works in its own folder under ``ctx.work_dir``."""
    n = len(label)
    merged = Outcome.start(label, confidence)
    groups = []
    for name, flag in GROUPS:
        idx = np.flatnonzero(shifted == flag)
        own = Plan(plan.policy, copy.deepcopy(plan.module), plan.ttt_reason, [])  # each group starts from the source
        out = refine_set(dataclasses.replace(ctx, work_dir=ctx.work_dir / name), x[idx], merged.label[idx],
                         merged.confidence[idx], own, GroupLedger(ledger, idx, merged.label))
        merged.label[idx], merged.confidence[idx], merged.method[idx] = out.label, out.confidence, out.method
        for key, values in out.columns.items():
            column = merged.columns.setdefault(
                key, np.full(n, -1, dtype=np.int64) if key.endswith("_label") else np.full(n, np.nan))
            column[idx] = values
        groups.append((name, idx, out.summary))
    merged.summary = _summary(ctx.cfg, plan, ledger, label, confidence, merged, groups, facts)
    return merged


def _summary(cfg: RefineConfig, plan: Plan, ledger: Ledger, label: np.ndarray, confidence: np.ndarray, merged: Outcome,
             groups: list, facts: dict) -> dict:
    """The whole set's report section: per-method figures over all files, per-group status and accuracy."""
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
