"""The refinement algorithm on arrays: route, adapt, re-infer, augment, repeat while items stay unsure.

No files and no data frames here (``core.py`` does that), so the evaluation script runs exactly this code.
Round 1: BN-adapt and TENT over the whole set (torch), written back to ONNX with a parity gate; the adapted graph
re-infers the routed items (or all, ``reinfer='all'``); TTA then augments what is still below the threshold.
Later rounds: one more TENT epoch, then the same re-infer and TTA on the items still below the threshold. Stops
when nothing is unsure, the rounds or the compute budget are spent, or no method can change an answer any more.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helios.models.base import ModelAdapter
from tasks.refine import tta
from tasks.refine.config import RefineConfig
from tasks.session import open_session, saved_optimized_for


@dataclass
class Outcome:
    """Per-item results (arrays over the items given) and the report section."""

    label: np.ndarray
    confidence: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # ttt_label, ttt_confidence, tta_label, ...
    method: np.ndarray | None = None  # '+'-joined methods that produced each item's answer ('' = untouched)
    summary: dict = field(default_factory=dict)


class _Ledger:
    """Per-method counts for the report: items touched, labels changed, accuracy around it, compute."""

    def __init__(self, n: int, truth: np.ndarray | None):
        self.n, self.truth, self.methods = n, truth, {}
        self._touched: dict[str, np.ndarray] = {}  # per adapting method: every item it re-inferred, over all rounds
        self.checks: dict[str, dict] = {}  # compute spent deciding what to run (not a method: answers no item)

    def charge(self, check: str, compute) -> None:
        """Count a check's passes in the compute budget and the reported multiplier."""
        c = self.checks.setdefault(check, {"forward_passes": 0, "seconds": 0.0})
        c["forward_passes"] += int(compute.forward)
        c["seconds"] = round(c["seconds"] + compute.seconds, 3)
        c["multiplier"] = round(c["forward_passes"] / max(self.n, 1), 3)

    def accuracy(self, labels: np.ndarray) -> float | None:
        if self.truth is None or not (self.truth >= 0).any():
            return None
        known = self.truth >= 0
        return round(float((labels[known] == self.truth[known]).mean()), 4)

    def record(self, method: str, touched: np.ndarray, before: np.ndarray, after: np.ndarray, compute) -> None:
        m = self.methods.setdefault(method, {"touched": 0, "changed": 0, "accuracy_before": self.accuracy(before),
                                             "forward_passes": 0, "backward_passes": 0, "seconds": 0.0})
        if method == "tta":  # augmentations: an item augmented again with a newer model counts again
            m["touched"] += int(touched.sum())
        else:
            seen = self._touched.setdefault(method, np.zeros(self.n, dtype=bool))
            seen |= touched
            m["touched"] = int(seen.sum())
        m["changed"] += int((before[touched] != after[touched]).sum())
        m["accuracy_after"] = self.accuracy(after)
        m["forward_passes"] += int(compute.forward)
        m["backward_passes"] += int(compute.backward)
        m["seconds"] = round(m["seconds"] + compute.seconds, 3)
        # A backward pass costs about two forward passes; plain inference is one forward pass per item.
        m["multiplier"] = round((m["forward_passes"] + 2 * m["backward_passes"]) / max(self.n, 1), 3)

    def spent(self) -> float:
        return sum(m["multiplier"] for m in [*self.methods.values(), *self.checks.values()])


@dataclass
class _Run:
    cfg: RefineConfig
    adapter: ModelAdapter
    x: np.ndarray
    providers: tuple[str, ...]
    threads: int
    work_dir: Path
    session: object = None  # the ONNX session answers come from (source, then adapted)
    module: object = None  # the torch module to adapt (None: no TTT)
    rng: np.random.Generator | None = None
    model_version: int = 0  # bumped whenever the session's model changes
    tta_done: dict = field(default_factory=dict)  # item -> model_version it was augmented with

    def infer(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, "object"]:
        from tasks.refine.ttt import Compute

        start = time.perf_counter()
        name = self.adapter.input_names[0]
        bs = self.cfg.batch_size
        logits = [self.session.run({name: self.x[idx[i:i + bs]]})[0] for i in range(0, len(idx), bs)]
        probs = tta.softmax(np.concatenate(logits)) if logits else np.zeros((0, len(self.adapter.labels)))
        return probs.argmax(1), probs.max(1), Compute(len(idx), 0, time.perf_counter() - start)


def refine_arrays(cfg: RefineConfig, x: np.ndarray, label: np.ndarray, confidence: np.ndarray, adapter: ModelAdapter,
                  onnx_path: Path, work_dir: Path, providers: tuple[str, ...], threads: int,
                  truth: np.ndarray | None = None, plan: "Plan | None" = None) -> Outcome:
    """Refine items given as a model-ready batch ``x`` with the infer stage's label indices and confidences.

    ``truth`` (label indices, -1 unknown) is used only for the accuracy figures of the report. ``plan`` is
    ``plan_methods``'s answer when the caller already asked (it loads the torch module). When the model can be
    adapted, a set that mixes files like the training data with strongly shifted ones is refined as two sets
    (``tasks.refine.mixture``); any other set as one.
    """
    n = len(label)
    if n and plan is None:
        plan = plan_methods(cfg, adapter)
    ledger, facts = _Ledger(n, truth), None
    if n and plan.ttt_reason is None:
        from tasks.refine import mixture

        shifted, facts = mixture.check(cfg, plan, x, threads, ledger)
        if shifted is not None:
            return mixture.refine_groups(cfg, x, label, confidence, adapter, onnx_path, work_dir, providers, threads,
                                         plan, ledger, shifted, facts)
    out = refine_set(cfg, x, label, confidence, adapter, onnx_path, work_dir, providers, threads, plan, ledger)
    if facts is not None:
        out.summary["mixture"] = facts
    return out


def refine_set(cfg: RefineConfig, x: np.ndarray, label: np.ndarray, confidence: np.ndarray, adapter: ModelAdapter,
               onnx_path: Path, work_dir: Path, providers: tuple[str, ...], threads: int, plan: "Plan | None",
               ledger: "_Ledger") -> Outcome:
    """Refine one set (the rounds below); the ledger keeps the report's per-method figures."""
    n = len(label)
    source_label = np.asarray(label).copy()
    out = Outcome(source_label.copy(), np.asarray(confidence, dtype=np.float64).copy(), method=np.full(n, "", dtype=object))
    routed = out.confidence < cfg.threshold
    summary = {"status": "done", "routed": int(routed.sum()), "threshold": cfg.threshold, "rounds": 0,
               "methods": {}, "reverted": [], "notes": []}
    out.summary = summary
    if plan is not None:
        summary["notes"] += plan.notes
    if n == 0 or (not routed.any() and plan.ttt_reason is not None):
        summary["notes"].append(f"no item below the threshold {cfg.threshold}: nothing to refine")
        return out
    policy, module, ttt_reason = plan.policy, plan.module, plan.ttt_reason
    if policy is None and ttt_reason is not None:
        summary["status"] = "skipped: " + ("; ".join(summary["notes"]) or "refine.methods is empty")
        return out
    source = open_session(onnx_path, providers, threads, optimized=saved_optimized_for(onnx_path, providers))
    run = _Run(cfg, adapter, x, providers, threads, work_dir, source, module,
               np.random.default_rng(cfg.seed))
    state = None
    for round_no in range(1, cfg.max_rounds + 1):
        unsure = out.confidence < cfg.threshold
        if not unsure.any() and (round_no > 1 or ttt_reason is not None):
            break  # round 1 still checks a confident set for a shift (BN statistics)
        if ledger.spent() >= cfg.max_multiplier:
            summary["notes"].append(f"compute budget refine.max_multiplier={cfg.max_multiplier} spent after round {round_no - 1}")
            break
        progressed = False
        if ttt_reason is None:
            from tasks.refine.ttt_step import adapt_round

            state, progressed = adapt_round(run, state, out, ledger, round_no, unsure, onnx_path)
        if policy is not None:
            progressed = _tta_round(run, policy, out, ledger) or progressed
        if not progressed:
            break
        summary["rounds"] = round_no
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


@dataclass
class Plan:
    """What can run: the TTA policy (None: no TTA), the torch module and why TTT cannot run (None: it can)."""

    policy: tta.Policy | None
    module: object
    ttt_reason: str | None
    notes: list[str]


def plan_methods(cfg: RefineConfig, adapter: ModelAdapter) -> Plan:
    """Decide which requested methods apply to this model, before any file is read; skips become notes."""
    policy, module, ttt_reason, notes = None, None, "TTT not requested", []
    if "tta" in cfg.methods:
        try:
            policy = tta.build_policy(cfg.tta_policy, cfg.tta_merge, adapter.modality)
        except tta.PolicyError as exc:
            notes.append(f"TTA skipped: {exc}")
    if {"bn-adapt", "tent"} & set(cfg.methods):
        if adapter.modality == "text":
            ttt_reason = ("TTT skipped: BN-adapt and TENT adapt BatchNorm layers, and text encoders have none "
                          "(they use LayerNorm)")
        else:
            from tasks.refine.ttt import can_adapt

            module = adapter.torch_module()
            ttt_reason = can_adapt(module, adapter.input_names)
        if ttt_reason:
            notes.append(ttt_reason)
    return Plan(policy, module, ttt_reason, notes)


def _tta_round(run: _Run, policy: tta.Policy, out: Outcome, ledger: _Ledger) -> bool:
    """Augment the items still unsure (adaptive) or all items, skipping those already augmented with this model."""
    from tasks.refine.ttt import Compute

    cfg = run.cfg
    wanted = out.confidence < cfg.threshold if cfg.tta_adaptive else np.ones(len(out.label), dtype=bool)
    fresh = np.array([run.tta_done.get(i) != run.model_version for i in range(len(out.label))])
    idx = np.flatnonzero(wanted & fresh)
    if len(idx) == 0:
        return False
    start = time.perf_counter()
    probs = tta.predict_tta(run.session.run, run.adapter.input_names[0], run.x[idx], policy, cfg.batch_size)
    compute = Compute(len(idx) * policy.size, 0, time.perf_counter() - start)
    before = out.label.copy()
    out.label[idx], out.confidence[idx] = probs.argmax(1), probs.max(1)
    for i in idx:
        run.tta_done[int(i)] = run.model_version
    _set_column(out, "tta", idx, probs.argmax(1), probs.max(1))
    mark(out, idx, "tta")
    touched = np.zeros(len(out.label), dtype=bool)
    touched[idx] = True
    ledger.record("tta", touched, before, out.label, compute)
    return True


def mark(out: Outcome, idx: np.ndarray, method: str) -> None:
    """Add ``method`` to the '+'-joined methods behind each item's answer."""
    for i in idx:
        parts = out.method[i].split("+") if out.method[i] else []
        out.method[i] = "+".join(parts if method in parts else [*parts, method])


def _set_column(out: Outcome, prefix: str, idx: np.ndarray, labels: np.ndarray, conf: np.ndarray) -> None:
    n = len(out.label)
    lab = out.columns.setdefault(f"{prefix}_label", np.full(n, -1, dtype=np.int64))
    con = out.columns.setdefault(f"{prefix}_confidence", np.full(n, np.nan))
    lab[idx], con[idx] = labels, conf
