"""BN-adapt (Schneider et al., 2020): replace BatchNorm statistics with those of the target files.

Imports only torch. The statistics are estimated over the *whole* target set, layer by layer, with every layer in
eval mode: layer k is measured after layers < k already normalize with their adapted statistics. That makes the
result independent of batch size and file order (batch size 1 gives the same model as batch size 512, and a
class-sorted stream the same as a shuffled one), unlike PyTorch's train-mode running averages. The source
statistics act as a prior worth ``prior`` samples (Schneider et al.'s N), so a handful of files moves the model
only a little and one file cannot zero a variance.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


class _Measured(Exception):
    """Raised by the hook once the layer being measured has seen its input: the rest of the forward is not needed."""


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers in forward (registration) order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether the model has any BatchNorm layer (what BN-adapt and TENT adapt)."""
    return bool(batchnorm_layers(model))


def _channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel sum and sum of squares of a BN input (N, C, ...), and how many values each channel holds."""
    flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
    return flat.sum(1), (flat * flat).sum(1), flat.shape[1]


def _measure(model: nn.Module, layer: nn.Module, batches: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and (biased) variance of ``layer``'s input over all batches, plus the number of samples seen."""
    total = {"s": 0.0, "ss": 0.0, "count": 0, "samples": 0}

    def hook(module, inputs):
        s, ss, count = _channel_moments(inputs[0])
        total["s"] = total["s"] + s
        total["ss"] = total["ss"] + ss
        total["count"] += count
        total["samples"] += inputs[0].shape[0]
        raise _Measured

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for x in batches:
                try:
                    model(x)
                except _Measured:
                    pass
    finally:
        handle.remove()
    mean = total["s"] / total["count"]
    var = (total["ss"] / total["count"] - mean * mean).clamp_min(0.0)
    return mean, var, total["samples"]


def adapt_statistics(model: nn.Module, batches: list[torch.Tensor], prior: float) -> int:
    """Set every BN layer's running statistics to the prior-weighted target statistics; returns forward passes (items).

    ``batches`` are the target inputs (any batch size, any order). Source statistics count as ``prior`` samples:
    ``mean = (prior * mean_src + n * mean_tgt) / (prior + n)``, the same for the variance.
    """
    model.eval()
    passes = 0
    for layer in batchnorm_layers(model):
        if layer.running_mean is None:  # track_running_stats=False: the layer always uses batch statistics
            continue
        mean, var, n = _measure(model, layer, batches)
        passes += n
        w_src = prior / (prior + n)
        dtype = layer.running_mean.dtype
        layer.running_mean.copy_((w_src * layer.running_mean.double() + (1 - w_src) * mean).to(dtype))
        layer.running_var.copy_((w_src * layer.running_var.double() + (1 - w_src) * var).to(dtype))
    return passes


def shift_score(source: list[tuple[torch.Tensor, torch.Tensor]], target: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """How far the target statistics moved from the source: the largest, over BN layers, of the channel-mean
    symmetric KL divergence between the per-channel Gaussians. About 0.01 for clean digits, 1 for fog."""
    scores = [0.0]
    for (m0, v0), (m1, v1) in zip(source, target):
        m0, m1, v0, v1 = m0.double(), m1.double(), v0.double() + 1e-5, v1.double() + 1e-5
        forward = 0.5 * (v0 / v1 + (m1 - m0) ** 2 / v1 - 1 + torch.log(v1 / v0))
        backward = 0.5 * (v1 / v0 + (m1 - m0) ** 2 / v0 - 1 + torch.log(v0 / v1))
        scores.append(float(((forward + backward) / 2).mean()))
    return max(scores)


def tracked_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BN layers that keep running statistics (the ones BN-adapt changes)."""
    return [m for m in batchnorm_layers(model) if m.running_mean is not None]


def snapshot_statistics(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of the (running mean, running variance) of every tracked BN layer, in order."""
    return [(m.running_mean.clone(), m.running_var.clone()) for m in tracked_layers(model)]


def restore_statistics(model: nn.Module, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Put back statistics taken with ``snapshot_statistics``."""
    layers = tracked_layers(model)
    for layer, (mean, var) in zip(layers, stats):
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)
