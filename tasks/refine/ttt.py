"""Test-time training over the whole scanned set: BN-adapt, then TENT, each checked and undone if it goes wrong.

Imports torch and numpy only. Adaptation sees every scanned item (never only the unsure ones: the statistics must
describe the target distribution), in a class-mixed order, and never uses ground truth.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import nn

from tasks.refine import bn_adapt, safety, sar, tent
from tasks.refine.config import RefineConfig
from tasks.refine.state import Compute


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``threads`` (0: leave it), restored afterwards."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def torch_device(wanted: str, providers: tuple[str, ...]) -> str:
    """``refine.device`` resolved: "cuda" when asked for, or with ``auto`` when the stage's providers include CUDA and
    torch sees a GPU; else "cpu". Asking for cuda where torch sees none is an error naming the fix."""
    if wanted == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if wanted == "cuda" and not available:
        raise ValueError("refine.device=cuda but torch sees no CUDA device here (a CPU-only torch wheel, or no GPU): "
                         "use refine.device=auto or cpu")
    return "cuda" if available and (wanted == "cuda" or "CUDAExecutionProvider" in providers) else "cpu"


@dataclass
class Adaptation:
    """The model being adapted and what each step did; ``module`` always holds the last state that passed the guards."""

    module: nn.Module
    x: torch.Tensor | None  # the sample; None while restored from a kept step (set before torch work)
    source_labels: np.ndarray
    n_classes: int
    fit: np.ndarray | None = None  # indices of the items adaptation learns from (all, or a class-mixed sample)
    optimizer: torch.optim.Optimizer | None = None
    kept: list[str] = field(default_factory=list)
    probs: np.ndarray | None = None  # of the current module over all items
    shift: float | None = None  # BN statistics shift score of the set (bn_adapt.shift_score)
    skipped: str | None = None  # why round 1 left the model as it was (no shift)
    reverted: list[str] = field(default_factory=list)
    optimizer_state: dict | None = None  # a kept step's optimizer, loaded into the next optimizer made


def start_adaptation(module: nn.Module, x: np.ndarray, source_labels: np.ndarray, n_classes: int, max_items: int,
                     rng: np.random.Generator, device: str = "cpu") -> Adaptation:
    """Wrap an eval-mode module and the whole set (N, C, H, W float32) for adaptation, both on ``device``.

    Adaptation learns from at most ``max_items`` items (a class-mixed sample, so its cost stays bounded on large
    scans); the guards and the answers cover every item.
    """
    module.to(device).eval()
    labels = np.asarray(source_labels)
    fit = np.sort(safety.mixed_order(labels, rng)[:max_items])
    return Adaptation(module, torch.from_numpy(np.ascontiguousarray(x)).to(device), labels, n_classes, fit)


def predict(module: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """Softmax probabilities (float64) of ``module`` over ``x`` in eval mode."""
    module.eval()
    with torch.no_grad():
        logits = torch.cat([module(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else x
    return torch.softmax(logits.double(), 1).cpu().numpy()


def _guard(state: Adaptation, cfg: RefineConfig, method: str, compute: Compute) -> bool:
    """Predict with the adapted module; on collapse return False (the caller restores the previous state).

    The reference is the model before this method (the source for BN-adapt, BN-adapt for TENT): a source already
    confused into few classes would otherwise hide a TENT that piles everything into fewer still.
    """
    probs = predict(state.module, state.x, cfg.batch_size)
    compute.forward += len(state.x)
    reference = state.source_labels if state.probs is None else state.probs.argmax(1)
    reason = safety.detect_collapse(reference, probs, state.n_classes, cfg.collapse_ratio, cfg.collapse_min_entropy)
    if reason is not None:
        state.reverted.append(f"{method}: {reason}; reverted to the previous model")
        return False
    state.probs = probs
    return True


def run_bn_adapt(state: Adaptation, cfg: RefineConfig, min_shift: float | None = None) -> Compute:
    """Replace BN statistics with prior-weighted whole-set statistics (order and batch size do not matter).

    With ``min_shift``, a set whose statistics moved less than that keeps the source statistics (``state.kept``
    stays without "bn-adapt"; ``state.shift`` says why) and nothing more is computed.
    """
    start, compute = time.perf_counter(), Compute()
    before = bn_adapt.snapshot_statistics(state.module)
    fit = torch.from_numpy(state.fit)
    chunks = [state.x[fit[i:i + cfg.batch_size]] for i in range(0, len(fit), cfg.batch_size)]
    compute.forward += bn_adapt.adapt_statistics(state.module, chunks, cfg.bn_prior)
    state.shift = bn_adapt.shift_score(before, bn_adapt.snapshot_statistics(state.module))
    if min_shift is not None and state.shift < min_shift:
        bn_adapt.restore_statistics(state.module, before)
    elif _guard(state, cfg, "bn-adapt", compute):
        state.kept.append("bn-adapt")
    else:
        bn_adapt.restore_statistics(state.module, before)
    compute.seconds = time.perf_counter() - start
    return compute


def run_tent(state: Adaptation, cfg: RefineConfig, epochs: int, rng: np.random.Generator) -> Compute:
    """``epochs`` passes of TENT over the class-mixed set; NaN/Inf or collapse restores the state before the call.

    A model without BatchNorm (LayerNorm: transformers, ConvNeXt) gets patch alignment and SAR's steps instead
    (``run_sar``)."""
    if not bn_adapt.has_batchnorm(state.module):
        return run_sar(state, cfg, epochs, rng)
    start, compute = time.perf_counter(), Compute()
    tent.configure_model(state.module)
    params, _ = tent.collect_params(state.module)
    if state.optimizer is None:
        state.optimizer = _restored(state, torch.optim.Adam(params, lr=cfg.tent_lr, betas=(0.9, 0.999)))
    saved = tent.copy_state(state.module, state.optimizer)
    limit = None if cfg.tent_entropy_limit is None else cfg.tent_entropy_limit * float(np.log(state.n_classes))
    try:
        for n, chunks in _steps(state, cfg, epochs, rng):
            for _ in range(cfg.tent_steps):
                tent.forward_and_adapt(state.module, chunks, state.optimizer, cfg.tent_max_grad_norm, limit,
                                       cfg.tent_diversity)
                compute.forward += n
                compute.backward += n
        ok = _guard(state, cfg, "tent", compute)
    except tent.NonFinite as exc:
        state.reverted.append(f"tent: {exc}; reverted to the previous model")
        ok = False
    return _settle(state, ok, saved, compute, start)


def _steps(state: Adaptation, cfg: RefineConfig, epochs: int, rng: np.random.Generator) -> Iterator[tuple[int, list]]:
    """(items, compute chunks) of each adaptation step: ``epochs`` passes over the class-mixed learning sample,
    ``tent_batch_size`` items per step, cut into ``batch_size`` chunks for compute."""
    for _ in range(epochs):
        order = state.fit[safety.mixed_order(state.source_labels[state.fit], rng)]
        for step_idx in safety.batches(order, cfg.tent_batch_size):
            step_idx = torch.from_numpy(step_idx)
            yield len(step_idx), [state.x[step_idx[i:i + cfg.batch_size]] for i in range(0, len(step_idx), cfg.batch_size)]


def _restored(state: Adaptation, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer`` with a kept step's state loaded (its moments continue where that run left them)."""
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)
        state.optimizer_state = None
    return optimizer


def _settle(state: Adaptation, ok: bool, saved: tuple[dict, dict], compute: Compute, start: float) -> Compute:
    """Keep a TENT/SAR pass that passed the guards, else restore the state before it; leave the module frozen."""
    if ok:
        if "tent" not in state.kept:
            state.kept.append("tent")
    else:
        tent.reset(state.module, state.optimizer, saved)
        state.optimizer = None  # a later round starts afresh rather than from a state that diverged
    state.module.requires_grad_(False)
    state.module.eval()
    compute.seconds = time.perf_counter() - start
    return compute


def run_sar(state: Adaptation, cfg: RefineConfig, epochs: int, rng: np.random.Generator) -> Compute:
    """LayerNorm models: in round 1 (nothing kept yet) patch alignment first, when the model carries source patch
    statistics (``align_patches``), then ``refine.sar_epochs`` passes of SAR over the class-mixed set (later rounds:
    at most ``epochs``). Model recovery, NaN/Inf or collapse undo SAR's steps (an aligned model stays aligned and
    kept); each step costs two forward and two backward passes."""
    start, compute = time.perf_counter(), Compute()
    first_round = "tent" not in state.kept
    aligned = first_round and align_patches(state, cfg, compute)
    epochs = cfg.sar_epochs if first_round else min(epochs, cfg.sar_epochs)
    if not aligned and epochs == 0:
        compute.seconds = time.perf_counter() - start
        return compute
    sar.configure_model(state.module)
    if state.optimizer is None:
        state.optimizer = _restored(state, sar.new_optimizer(state.module, cfg.sar_lr, cfg.sar_rho))
    saved = tent.copy_state(state.module, state.optimizer)
    ok = _sar_steps(state, cfg, epochs, rng, compute) if epochs else True
    if not ok and aligned:  # SAR's steps are undone; the aligned model (already guarded) is what is kept
        tent.reset(state.module, state.optimizer, saved)
        state.optimizer, ok = None, True
    return _settle(state, ok, saved, compute, start)


def align_patches(state: Adaptation, cfg: RefineConfig, compute: Compute) -> bool:
    """Re-standardize the learning sample's input patches to the model's source patch statistics (CORAL folded into
    the patch embedding, ``sar.align_patch_embedding``); True when aligned and the collapse guard passed. A model
    without statistics, ``refine.ln_align=false`` or a collapse leave the model as it was (False)."""
    if not sar.can_align(state.module, cfg.ln_align):
        return False
    before = copy.deepcopy(state.module.state_dict())
    fit = torch.from_numpy(state.fit)
    chunks = [state.x[fit[i:i + cfg.batch_size]] for i in range(0, len(fit), cfg.batch_size)]
    sar.align_patch_embedding(state.module, chunks, cfg.ln_align_eps)
    if _guard(state, cfg, "tent (patch alignment)", compute):
        return True
    state.module.load_state_dict(before)
    return False


def _sar_steps(state: Adaptation, cfg: RefineConfig, epochs: int, rng: np.random.Generator, compute: Compute) -> bool:
    """``epochs`` passes of SAR steps, then the collapse guard; False on model recovery, NaN/Inf or collapse (the
    reason is recorded; the caller restores)."""
    ln_classes = float(np.log(state.n_classes))
    margin, floor, ema = cfg.sar_margin * ln_classes, cfg.sar_reset_share * ln_classes, None
    try:
        for n, chunks in _steps(state, cfg, epochs, rng):
            loss = sar.forward_and_adapt(state.module, chunks, state.optimizer, margin)
            compute.forward += 2 * n
            compute.backward += 2 * n
            if loss is not None:
                ema = loss if ema is None else 0.9 * ema + 0.1 * loss
            if ema is not None and ema < floor:
                state.reverted.append(f"tent: SAR model recovery (moving entropy {ema:.3f} < {floor:.3f} nats); "
                                      "SAR's steps reverted")
                return False
        return _guard(state, cfg, "tent", compute)
    except tent.NonFinite as exc:
        state.reverted.append(f"tent: {exc}; SAR's steps reverted")
        return False
