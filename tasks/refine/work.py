"""The refine stage's work, when its kept answers do not answer (``tasks.refine.core``): plan the methods, read the
files, open what an earlier run kept, refine.

``refine_rows`` works on the rows the stage refines, reading files as it needs them (``tasks.refine.stream``: a
bounded sample for adaptation, chunks for re-inference and TTA) and keeping what reruns can reuse
(``tasks.refine.memo``); ``refine_arrays`` on a model-ready batch (what the evaluation scripts call), where it
chooses to refine the items as one set or, for a clear mixture, as two groups. Imports torch (through the methods).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.refine import memo, mixture, ttt
from tasks.refine.context import RefineContext
from tasks.refine.items import Items, Keys, capped_batch
from tasks.refine.plan import Plan, plan_methods
from tasks.refine.rounds import refine_set
from tasks.refine.state import Ledger, Outcome
from tasks.refine.stream import open_files


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
    if n and plan.ttt_reason is None:  # torch works on the GPU when the stage runs on one (refine.device)
        ctx = dataclasses.replace(ctx, device=ttt.torch_device(ctx.cfg.device, ctx.providers))
        plan.module.to(ctx.device)
        shifted, facts, pending = mixture.check(ctx, plan, items, ledger, defer=items.memo is not None)
        if pending is not None:
            shifted, facts = mixture.place_routed(ctx, plan, items, label, confidence, ledger, shifted, facts, pending)
        if shifted is not None:
            return mixture.refine_groups(ctx, items, label, confidence, plan, ledger, shifted, facts)
    out = refine_set(ctx, items, label, confidence, plan, ledger)
    if facts is not None:
        out.summary["mixture"] = facts
    return out


def refine_rows(ctx: RefineContext, paths: pa.Array, label: np.ndarray, confidence: np.ndarray, input_root: Path,
                keys: Keys | None, truth: np.ndarray | None) -> Outcome | list[str]:
    """Refine the rows at ``paths`` (an Arrow string array, in the stage's order) with the infer stage's ``label``
    (indices) and ``confidence``; ``keys`` are their content hashes, None when the frame has none: the outcome, with the adaptation facts and notes in its summary; or the
    plan's notes when it refines nothing (a model without BatchNorm and TTA off, say)."""
    plan = plan_methods(ctx.cfg, ctx.adapter)
    if plan.policy is None and plan.ttt_reason is not None:
        return list(plan.notes)
    items = open_files(ctx, Path(input_root), paths, label, keys)
    notes, adaptation = [], None
    if keys is not None:
        items.memo, adaptation = memo.open_memo(ctx, keys)
    outcome = refine_arrays(ctx, items, label, confidence, truth, plan)
    if items.lost:
        notes.append(f"{len(items.lost)} file(s) no longer decode and were left as inferred")
        outcome.summary["lost"] = len(items.lost)
    if adaptation is not None:
        outcome.summary["adaptation"], more = memo.describe(adaptation, items.memo, ctx.cfg)
        notes += more
    outcome.summary["notes"] = notes + outcome.summary.get("notes", [])
    return outcome
