"""A set that mixes files like the training data with strongly shifted ones is refined as two sets.

``domains.shifted_group`` finds the two groups (or says the set is one distribution). Each group then goes through
the same rounds as any set (``rounds.refine_set``) with a fresh copy of the source model and its own gates: a group
of clean files does not look shifted and keeps its answers (TTA still augments its unsure ones); the shifted group
adapts to its own statistics. One ledger covers the whole set, so the report's per-method figures, the compute
budget and the accuracy are over all files. The check itself costs one forward pass per item, charged to the
compute budget and reported under ``mixture``; ``work.refine_arrays`` runs the check and chooses one set or two.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import pandas as pd
import torch

from helios.heap import trim_heap
from tasks.refine import domains, probe
from tasks.refine.config import RefineConfig
from tasks.refine.context import RefineContext
from tasks.refine.items import Items
from tasks.refine.memo import read_json, write_json, write_table
from tasks.refine.plan import Plan
from tasks.refine.rounds import refine_set
from tasks.refine.routed import Routed, answer, export_routed
from tasks.refine.state import Compute, GroupLedger, Ledger, Outcome, Run
from tasks.refine.ttt import torch_threads
from tasks.refine.ttt_step import round_step
from tasks.refine.writeback import source_opset

GROUPS = (("like-source", False), ("shifted", True))


def check(ctx: RefineContext, plan: Plan, items: Items, ledger: Ledger,
          defer: bool = False) -> tuple[np.ndarray | None, dict, tuple | None]:
    """(mask of the shifted items, facts, pending) for a clear mixture, else (None, facts, None); the pass is charged
    to the budget.

    The groups are found on the sample; when the sample is not the whole set, every other item is placed in the
    nearer group, chunk by chunk (a forward pass up to the second BN layer). A kept split places only new files.
    With ``defer`` (a set with a memo) a split set's items are not placed here: ``pending`` is (splitter, the
    positions still to place) for ``place_routed``, which places them while answering round 1 (else None)."""
    start = time.perf_counter()
    kept = _load_split(items)
    with torch_threads(ctx.threads):
        if kept is None:
            sample = torch.from_numpy(np.ascontiguousarray(items.sample)).to(ctx.device)
            found, facts, splitter = domains.find_groups(plan.module, sample, ctx.cfg.batch_size, ctx.cfg.ttt_min_shift)
            passes, shifted, todo = facts.pop("forward_passes", 0), None, np.zeros(0, np.int64)
            if found is not None:
                shifted = np.zeros(items.n, dtype=bool)
                shifted[items.sample_idx] = found
                todo = np.setdiff1d(np.arange(items.n), items.sample_idx)
                if len(todo):
                    facts["sample"] = int(len(items.sample_idx))
        else:
            shifted, facts, splitter, passes, todo = kept
        pending = (splitter, todo) if defer and splitter is not None else None
        if len(todo) and pending is None:
            shifted[todo] = _place(ctx, plan, items, splitter, todo)
            passes += len(todo)
    if items.memo is not None and (kept is None or len(todo)) and pending is None:  # else place_routed saves it
        _save_split(items, shifted, facts, splitter, passes)
    ledger.charge("mixture-check", Compute(passes, 0, time.perf_counter() - start))
    return shifted, {**facts, **ledger.checks["mixture-check"]}, pending


def place_routed(ctx: RefineContext, plan: Plan, items: Items, label: np.ndarray, confidence: np.ndarray,
                 ledger: Ledger, shifted: np.ndarray, facts: dict, pending: tuple) -> tuple[np.ndarray, dict]:
    """Place the items ``check`` left (``pending``) while answering round 1 (``tasks.refine.routed``): each group's
    first step runs on its part of the sample, then one pass of the routed graph over the items round 1 re-infers
    (and those to place) gives each item's group and its group's model's answer; the groups' rounds then take those
    answers (``Items.answer_ahead``) instead of re-inferring. Falls back to the probe pass when no group adapts in
    round 1 or the routed graph fails its parity check. Returns the full mask and the facts."""
    splitter, todo = pending
    cfg = ctx.cfg
    sample_idx = items.sample_idx
    models, owners, paths = [], [], []
    for name, flag in GROUPS:
        part = sample_idx[shifted[sample_idx] == flag]
        run = Run(dataclasses.replace(ctx, work_dir=ctx.work_dir / name), items.subset(part), None,
                  copy.deepcopy(plan.module), np.random.default_rng(cfg.seed), ctx.onnx_path)
        start_step = Outcome.start(label[part], confidence[part])
        step = round_step(run, None, start_step, 1, start_step.confidence < cfg.threshold)
        items.memo.hold(run, 1, step)
        if step.path is not None:
            models.append(step.state.module)
            owners.append(flag)
            paths.append(step.path)
    path = None
    if models:
        meta = {"models": [items.memo.sha(p) for p in paths], "owners": owners, "splitter": splitter.to_dict()}
        with torch_threads(ctx.threads):
            path = export_routed(ctx, Routed(plan.module, splitter, models, owners), items.sample[:256],
                                 ctx.work_dir / "routed", meta)
    start = time.perf_counter()
    if path is None:
        shifted[todo] = _place(ctx, plan, items, splitter, todo)
    else:
        unsure = np.flatnonzero(np.asarray(confidence) < cfg.threshold)
        want = np.arange(items.n) if cfg.reinfer == "all" else np.union1d(todo, unsure)
        flag, lab, conf = answer(ctx, items, path, want)
        shifted[todo] = flag[np.searchsorted(want, todo)]
        for owner, model_path in zip(owners, paths):
            # a sample file the graph put in the other group than the 2-means did (rare: float rounding at the
            # boundary) got the other model's answer: its group re-infers it (Run.infer asks for what is missing)
            mine = np.flatnonzero((shifted[want] == owner) & (flag == owner))
            items.answer_ahead(model_path, lab[mine], conf[mine], want[mine])
        facts["placed_while_answering"] = True
    ledger.charge("mixture-check", Compute(len(todo), 0, time.perf_counter() - start))
    passes = ledger.checks["mixture-check"]["forward_passes"]
    _save_split(items, shifted, {k: v for k, v in facts.items() if k not in ("seconds", "multiplier",
                                                                          "forward_passes")}, splitter, passes)
    trim_heap()  # the pass's answers were read whole: what they took goes back before the groups' rounds
    return shifted, {**facts, **ledger.checks["mixture-check"]}


def _place(ctx: RefineContext, plan: Plan, items: Items, splitter: domains.Splitter, todo: np.ndarray) -> np.ndarray:
    """Whether each item of ``todo`` falls in the shifted group (a file that no longer decodes: no): the features
    come from the probe graph in ONNX Runtime, chunk by chunk."""
    out = np.zeros(len(todo), dtype=bool)
    features = None
    for part, x in items.read(todo, ctx.cfg.batch_size * 8):
        if features is None:
            path = probe.export_probe(plan.module, domains.LAYERS, x[:2], ctx.work_dir / "probe",
                                      source_opset(ctx.onnx_path))
            features = probe.probe_session(path, ctx.threads)
        found = np.concatenate([features(x[i:i + ctx.cfg.batch_size]) for i in range(0, len(x), ctx.cfg.batch_size)])
        out[np.searchsorted(todo, part)] = splitter.shifted(found)  # todo is sorted
    return out


def _load_split(items: Items):
    """A kept split: (mask with unknown files False, facts, splitter, passes, positions still to place), or None."""
    memo = items.memo
    meta = None if memo is None or items.keys is None else read_json(memo.root / "mixture.json")
    if meta is None:
        return None
    if meta["splitter"] is None:
        return None, meta["facts"], None, meta["passes"], np.zeros(0, np.int64)
    known = pd.read_parquet(memo.root / "groups.parquet").drop_duplicates("key").set_index("key")["shifted"]
    got = known.reindex(np.asarray(items.keys))
    shifted = got.fillna(False).to_numpy(dtype=bool)
    return shifted, meta["facts"], domains.Splitter.from_dict(meta["splitter"]), meta["passes"], \
        np.flatnonzero(got.isna().to_numpy())


def _save_split(items: Items, shifted: np.ndarray | None, facts: dict, splitter, passes: int) -> None:
    root = items.memo.root
    if shifted is not None:
        write_table({"key": items.keys.values, "shifted": shifted}, root / "groups.parquet")  # keys stay in Arrow
    write_json({"facts": facts, "passes": passes, "splitter": None if splitter is None else splitter.to_dict()},
               root / "mixture.json")


def refine_groups(ctx: RefineContext, items: Items, label: np.ndarray, confidence: np.ndarray, plan: Plan,
                  ledger: Ledger, shifted: np.ndarray, facts: dict) -> Outcome:
    """Refine each group (``shifted`` from ``check``) as its own set and merge the answers, columns and report
    section; each group works in its own folder under ``ctx.work_dir``."""
    n = len(label)
    merged = Outcome.start(label, confidence)
    groups = []
    for name, flag in GROUPS:
        idx = np.flatnonzero(shifted == flag)
        own = Plan(plan.policy, copy.deepcopy(plan.module), plan.ttt_reason, [])  # each group starts from the source
        out = refine_set(dataclasses.replace(ctx, work_dir=ctx.work_dir / name), items.subset(idx), merged.label[idx],
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
