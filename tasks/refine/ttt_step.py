"""One TTT round of the refinement loop: adapt in torch, write back to ONNX, re-infer with the adapted graph."""
from __future__ import annotations

import time

import numpy as np

from tasks.prepare.parity import ParityError
from tasks.refine import ttt
from tasks.refine.state import Compute, GroupLedger, Ledger, Outcome, Run, mark, set_column
from tasks.refine.writeback import export_adapted
from tasks.session import open_session


def _adapt(run: Run, state: ttt.Adaptation | None, labels: np.ndarray, routed_share: float):
    """Round 1: BN-adapt (+ TENT); later rounds: one more TENT epoch. Returns state, computes, BN-only probs.

    Round 1 adapts only a set that looks shifted: enough items below the threshold, or BN statistics that moved.
    Confidence alone misses a confidently wrong shift (fog: 88 % errors, nearly all above 0.9 confidence).
    """
    cfg = run.ctx.cfg
    computes: dict[str, Compute] = {}
    bn_probs = None
    if state is None:
        state = ttt.start_adaptation(run.module, run.x, labels, len(run.ctx.adapter.labels), cfg.adapt_max_items,
                                     run.rng)
        # TENT normalizes with BN-adapt's statistics, so BN-adapt always runs first (reported as its own method
        # only when asked for).
        gate = None if routed_share >= cfg.ttt_min_routed_share else cfg.ttt_min_shift
        if not ttt.bn_adapt.has_batchnorm(run.module):
            return _adapt_layernorm(run, state, cfg, routed_share)
        computes["bn-adapt"] = ttt.run_bn_adapt(state, cfg, gate)
        bn_probs = state.probs
        if gate is not None and state.shift < gate:
            state.skipped = (f"TTT skipped: the set does not look shifted ({routed_share:.1%} of items below the "
                             f"threshold < refine.ttt_min_routed_share={cfg.ttt_min_routed_share}, BN statistics "
                             f"shift {state.shift:.3f} < refine.ttt_min_shift={cfg.ttt_min_shift})")
            return state, {}, None
        if "tent" in cfg.methods and "bn-adapt" in state.kept:
            computes["tent"] = ttt.run_tent(state, cfg, cfg.tent_epochs, run.rng)
    elif "tent" in cfg.methods and "tent" in state.kept and not any(r.startswith("tent") for r in state.reverted):
        computes["tent"] = ttt.run_tent(state, cfg, 1, run.rng)
    return state, computes, bn_probs


def _adapt_layernorm(run: Run, state: ttt.Adaptation, cfg, routed_share: float):
    """Round 1 of a LayerNorm model: no statistics to estimate or to read a shift from, so the routed share alone
    decides whether the set looks shifted; then SAR."""
    if routed_share < cfg.ttt_min_routed_share:
        state.skipped = (f"TTT skipped: the set does not look shifted ({routed_share:.1%} of items below the threshold "
                         f"< refine.ttt_min_routed_share={cfg.ttt_min_routed_share}; a LayerNorm model has no BN "
                         "statistics to show a confident shift)")
        return state, {}, None
    if "tent" not in cfg.methods:
        state.skipped = "TTT skipped: a LayerNorm model has no BN statistics to adapt, and tent is not requested"
        return state, {}, None
    return state, {"tent": ttt.run_tent(state, cfg, cfg.tent_epochs, run.rng)}, None


def _export(run: Run, state: ttt.Adaptation, unsure: np.ndarray):
    """The adapted graph's path (parity-checked on a sample, unsure items first) and the seconds it took; None when
    parity fails (the source model's answers are kept and the reason is recorded)."""
    start = time.perf_counter()
    try:
        sample = run.x[np.r_[np.flatnonzero(unsure), np.flatnonzero(~unsure)][:64]]  # unsure items first
        path, _ = export_adapted(run.ctx, state.module, list(state.kept), sample)
    except ParityError as exc:
        state.reverted.append(f"{'+'.join(state.kept)}: {exc}; answers kept from the source model")
        state.kept.clear()
        return None, 0.0
    return path, time.perf_counter() - start


def adapt_round(run: Run, state: ttt.Adaptation | None, out: Outcome, ledger: Ledger | GroupLedger, round_no: int,
                unsure: np.ndarray):
    """Run one TTT round and re-infer; returns (state, whether any answer could have changed)."""
    cfg = run.ctx.cfg
    with ttt.torch_threads(run.ctx.threads):
        share = float(unsure.mean()) if len(unsure) else 0.0
        state, computes, bn_probs = _adapt(run, state, out.label if state is None else state.source_labels, share)
        if not computes or not state.kept or (round_no > 1 and "tent" not in computes):
            return state, False
        if round_no > 1 and any(r.startswith("tent") for r in state.reverted[-1:]):
            return state, False  # this round's TENT epoch was undone: the model is what it was
        path, export_seconds = _export(run, state, unsure)
        if path is None:
            return state, False
    run.session = open_session(path, run.ctx.providers, run.ctx.threads)
    run.model_version += 1
    targets = unsure.copy() if not (cfg.reinfer == "all" and round_no == 1) else np.ones_like(unsure)
    idx = np.flatnonzero(targets)
    new_label, new_conf, infer_compute = run.infer(idx)
    last = "tent" if "tent" in computes and "tent" in state.kept else "bn-adapt"
    computes[last].seconds += export_seconds
    computes[last].add(infer_compute)
    before = out.label.copy()
    after = before.copy()
    if "bn-adapt" in computes and bn_probs is not None:
        # BN-adapt's own effect, read from the torch predictions its collapse check made (parity keeps torch
        # and ONNX in agreement); TENT's is then measured from there to the re-inferred ONNX answers.
        after[idx] = bn_probs[idx].argmax(1)
        if "bn-adapt" in cfg.methods or last == "bn-adapt":
            ledger.record("bn-adapt", targets, before, after if last != "bn-adapt" else _with(before, idx, new_label),
                          computes["bn-adapt"])
        else:
            computes.get("tent", Compute()).add(computes["bn-adapt"])
    if "tent" in computes:
        ledger.record("tent", targets, after if "bn-adapt" in computes else before, _with(before, idx, new_label),
                      computes["tent"])
    out.label[idx], out.confidence[idx] = new_label, new_conf
    set_column(out, "ttt", idx, new_label, new_conf)
    for method in state.kept:
        mark(out, idx, method)
    return state, True


def _with(labels: np.ndarray, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of ``labels`` with items ``idx`` set to ``values``."""
    updated = labels.copy()
    updated[idx] = values
    return updated
