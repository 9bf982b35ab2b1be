"""The refinement rounds over one set of items: route, adapt, re-infer, augment, repeat while items stay unsure.

No files and no data frames here (``core.py`` does that), so the evaluation script runs exactly this code.
Round 1: BN-adapt and TENT on the set's sample (torch: ``Items.sample``, the whole set when it is small), written
back to ONNX with a parity gate; the adapted graph re-infers the routed items (or all, ``reinfer='all'``) through
``Items.reinfer`` when the caller gives one; TTA then augments what is still below the threshold, chunk by chunk.
Later rounds: one more TENT epoch, then the same re-infer and TTA on the items still below the threshold. Stops
when nothing is unsure, the rounds or the compute budget are spent, or no method can change an answer any more.
"""
from __future__ import annotations

import time

import numpy as np

from tasks.refine import tta
from tasks.refine.augment import augment_items
from tasks.refine.context import RefineContext
from tasks.refine.items import Items
from tasks.refine.plan import Plan
from tasks.refine.state import Compute, GroupLedger, Ledger, Outcome, Run, mark, set_column
from tasks.refine.ttt import Adaptation
from tasks.refine.ttt_step import adapt_round
from tasks.session import open_session, saved_optimized_for


def refine_set(ctx: RefineContext, items: Items, label: np.ndarray, confidence: np.ndarray, plan: Plan | None,
               ledger: Ledger | GroupLedger) -> Outcome:
    """Refine one set (the rounds above); the ledger keeps the report's per-method figures."""
    cfg = ctx.cfg
    out = Outcome.start(label, confidence)
    source_label = out.label.copy()
    routed = out.confidence < cfg.threshold
    summary = {"status": "done", "routed": int(routed.sum()), "threshold": cfg.threshold, "rounds": 0,
               "methods": {}, "reverted": [], "notes": []}
    out.summary = summary
    if plan is not None:
        summary["notes"] += plan.notes
    if len(label) == 0 or (not routed.any() and plan.ttt_reason is not None):
        summary["notes"].append(f"no item below the threshold {cfg.threshold}: nothing to refine")
        return out
    if plan.policy is None and plan.ttt_reason is not None:
        summary["status"] = "skipped: " + ("; ".join(summary["notes"]) or "refine.methods is empty")
        return out
    source = open_session(ctx.onnx_path, ctx.providers, ctx.threads,
                          optimized=saved_optimized_for(ctx.onnx_path, ctx.providers))
    run = Run(ctx, items, source, plan.module, np.random.default_rng(cfg.seed), ctx.onnx_path)
    state = _rounds(run, plan, out, ledger)
    summary["methods"] = ledger.methods
    if state is not None:
        summary["reverted"] += state.reverted
        if state.shift is not None:
            summary["shift_score"] = round(state.shift, 4)
        if state.skipped:
            summary["notes"].append(state.skipped)
    summary["still_below_threshold"] = int((out.confidence < cfg.threshold).sum())
    summary["multiplier"] = round(ledger.spent(), 3)
    summary["accuracy_before"] = ledger.accuracy(source_label)
    summary["accuracy_after"] = ledger.accuracy(out.label)
    return out


def _rounds(run: Run, plan: Plan, out: Outcome, ledger: Ledger | GroupLedger) -> Adaptation | None:
    """Run rounds until nothing changes or a limit is reached; returns the adaptation state (None: no TTT ran)."""
    cfg, summary = run.ctx.cfg, out.summary
    state = None
    for round_no in range(1, cfg.max_rounds + 1):
        unsure = out.confidence < cfg.threshold
        if not unsure.any() and (round_no > 1 or plan.ttt_reason is not None):
            break  # round 1 still checks a confident set for a shift (BN statistics)
        if ledger.spent() >= cfg.max_multiplier:
            summary["notes"].append(f"compute budget refine.max_multiplier={cfg.max_multiplier} spent after round {round_no - 1}")
            break
        progressed = False
        if plan.ttt_reason is None:
            state, progressed = adapt_round(run, state, out, ledger, round_no, unsure)
        if plan.policy is not None:
            progressed = _tta_round(run, plan.policy, out, ledger) or progressed
        if not progressed:
            break
        summary["rounds"] = round_no
    return state


def _tta_round(run: Run, policy: tta.Policy, out: Outcome, ledger: Ledger | GroupLedger) -> bool:
    """Augment the items still unsure (adaptive) or all items, skipping those already augmented with this model."""
    cfg = run.ctx.cfg
    wanted = out.confidence < cfg.threshold if cfg.tta_adaptive else np.ones(len(out.label), dtype=bool)
    idx = np.flatnonzero(wanted & (run.tta_done != run.model_version))
    if len(idx) == 0:
        return False
    start = time.perf_counter()
    done, labels, conf = augment_items(run, policy, idx)
    compute = Compute(len(idx) * policy.size, 0, time.perf_counter() - start)
    before = out.label.copy()
    out.label[done], out.confidence[done] = labels, conf
    run.tta_done[idx] = run.model_version
    set_column(out, "tta", done, labels, conf)
    mark(out, done, "tta")
    touched = np.zeros(len(out.label), dtype=bool)
    touched[done] = True
    ledger.record("tta", touched, before, out.label, compute)
    return True
