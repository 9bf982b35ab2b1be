"""One TTT round of the refinement loop: adapt in torch on the sample, write back to ONNX, re-infer with the adapted
graph. A round kept from an earlier run (``tasks.refine.memo``) is replayed without torch work."""
from __future__ import annotations

import time

import numpy as np
import torch

from tasks.prepare.parity import ParityError
from tasks.refine import ttt
from tasks.refine.state import Compute, GroupLedger, Ledger, Outcome, Run, Step, mark, set_column
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
        state = ttt.start_adaptation(run.module, run.items.sample, labels[run.items.sample_idx],
                                     len(run.ctx.adapter.labels), cfg.adapt_max_items, run.rng, run.ctx.device)
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


def _export(run: Run, state: ttt.Adaptation, unsure: np.ndarray, round_no: int):
    """The adapted graph's path (parity-checked on sample items, unsure ones first) and the seconds it took; None
    when parity fails (the source model's answers are kept and the reason is recorded)."""
    start = time.perf_counter()
    try:
        u = unsure[run.items.sample_idx]
        sample = run.items.sample[np.r_[np.flatnonzero(u), np.flatnonzero(~u)][:64]]  # unsure items first
        folder = run.ctx.work_dir / "adapted" / f"round-{round_no}"
        path, _ = export_adapted(run.ctx, state.module, list(state.kept), sample, folder)
    except ParityError as exc:
        state.reverted.append(f"{'+'.join(state.kept)}: {exc}; answers kept from the source model")
        state.kept.clear()
        return None, 0.0
    return path, time.perf_counter() - start


def _torch_step(run: Run, state: ttt.Adaptation | None, out: Outcome, round_no: int, unsure: np.ndarray) -> Step:
    """The torch part of a round: adapt on the sample, then export when there is a new model to re-infer with."""
    with ttt.torch_threads(run.ctx.threads):
        if state is not None and state.x is None:  # restored from a kept step, or freed while the set was re-inferred
            state.x = torch.from_numpy(np.ascontiguousarray(run.items.sample)).to(run.ctx.device)
        if state is not None:  # later rounds mix the classes by the current answers (the round before changed some)
            state.source_labels = out.label[run.items.sample_idx]
        share = float(unsure.mean()) if len(unsure) else 0.0
        if state is None and not len(run.items.sample_idx):  # every file of the sample is gone since the scan
            state = ttt.start_adaptation(run.module, run.items.sample, out.label[:0], len(run.ctx.adapter.labels), 0,
                                         run.rng, run.ctx.device)
            state.skipped = "TTT skipped: no file of the set decodes any more"
            return Step(state, {}, None, None)
        state, computes, bn_probs = _adapt(run, state, out.label if state is None else state.source_labels, share)
        bn = None if bn_probs is None else (run.items.sample_idx, bn_probs.argmax(1))
        if not computes or not state.kept or (round_no > 1 and "tent" not in computes):
            return Step(state, computes, bn, None)
        if round_no > 1 and any(r.startswith("tent") for r in state.reverted[-1:]):
            return Step(state, computes, bn, None)  # this round's TENT epoch was undone: the model is what it was
        path, export_seconds = _export(run, state, unsure, round_no)
        return Step(state, computes, bn, path, export_seconds)


def round_step(run: Run, state: ttt.Adaptation | None, out: Outcome, round_no: int, unsure: np.ndarray) -> Step:
    """The round's torch step: replayed from ``run.items.memo`` when kept there, else run (and kept)."""
    memo = run.items.memo
    step = memo.load_step(run, round_no) if memo is not None else None
    if step is None:
        step = _torch_step(run, state, out, round_no, unsure)
        if memo is not None:
            memo.save_step(run, round_no, step)
    return step


def adapt_round(run: Run, state: ttt.Adaptation | None, out: Outcome, ledger: Ledger | GroupLedger, round_no: int,
                unsure: np.ndarray):
    """Run one TTT round (or replay it from ``run.items.memo``) and re-infer; returns (state, whether any answer
    could have changed)."""
    cfg = run.ctx.cfg
    step = round_step(run, state, out, round_no, unsure)
    state, computes = step.state, step.computes
    if step.path is None:
        return state, False
    state.x = None  # the sample's tensor: a large sample is freed while the set is re-inferred
    run.items.drop_sample()
    run.session = open_session(step.path, run.ctx.providers, run.ctx.threads)
    run.model_path = step.path
    run.model_version += 1
    wanted = unsure.copy() if not (cfg.reinfer == "all" and round_no == 1) else np.ones_like(unsure)
    new_label, new_conf, infer_compute = run.infer(np.flatnonzero(wanted))
    answered = new_label >= 0  # a file that no longer decodes keeps its answer
    idx, new_label, new_conf = np.flatnonzero(wanted)[answered], new_label[answered], new_conf[answered]
    targets = np.zeros_like(wanted)
    targets[idx] = True
    last = "tent" if "tent" in computes and "tent" in state.kept else "bn-adapt"
    computes[last].seconds += step.export_seconds
    computes[last].add(infer_compute)
    before = out.label.copy()
    after = before.copy()
    if "bn-adapt" in computes and step.bn is not None:
        # BN-adapt's own effect, read from the torch predictions its collapse check made on the sample (parity
        # keeps torch and ONNX in agreement); TENT's is then measured from there to the re-inferred ONNX answers.
        positions, labels = step.bn
        inside = targets[positions]
        after[positions[inside]] = labels[inside]
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
