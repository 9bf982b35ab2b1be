"""Mixed sets: find the files that look shifted when a scan mixes them with files like the training data.

BN-adapt and TENT assume one target distribution. A scan that holds both clean and shifted files (a folder of good
photos plus a batch from a foggy camera) adapts to statistics between the two, which helps the shifted files less
and hurts the clean ones (MNIST, 150 clean + 150 fog: clean error 1.3 % -> 28 %). So before adapting, each item's
own statistics at the input of the first ``LAYERS`` BatchNorm layers (per-channel spatial mean and log variance,
relative to the source statistics) are split into two groups with 2-means. The set counts as a mixture only when the
groups differ clearly: one group's pooled statistics stay close to the source (BN shift over all BN layers below
``refine.ttt_min_shift``) and the other's moved at least ``MIN_GAP`` times as far and ``MIN_HIGH`` times that
bound. The refine stage then refines each group as a set of its own (``rounds.refine_set``), with its own gates:
clean files are left alone, shifted ones adapt to their own statistics. On MNIST this separates clean digits from
fog, brightness, stripe, impulse noise or canny edges with 99-100 % of the files placed right, and never splits a
set of one corruption (the 15 MNIST-C test and 9 dev corruptions, seeds 0-2).

Imports torch and numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tasks.refine import bn_adapt

LAYERS = 2  # the first BatchNorm layers: closest to the pixels, where acquisition shifts show
MIN_GAP = 8.0  # the shifted group's pooled shift must be at least this many times the other's ...
MIN_HIGH = 2.0  # ... and at least this many times refine.ttt_min_shift: only a clear, strong shift splits a set
MIN_SHARE = 0.1  # each group holds at least this share of the items (and MIN_ITEMS): no splitting off outliers
MIN_ITEMS = 32


def item_moments(module: nn.Module, x: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per item and channel, the spatial mean and variance at the input of every BN layer (one forward pass)."""
    layers = bn_adapt.tracked_layers(module)
    parts: list[list] = [[] for _ in layers]

    def hook_for(k):
        def hook(_module, inputs):
            a = inputs[0].detach().double()
            dims = tuple(range(2, a.dim()))
            parts[k].append((a.mean(dims), a.var(dims, unbiased=False)) if dims else (a, torch.zeros_like(a)))
        return hook

    handles = [layer.register_forward_pre_hook(hook_for(k)) for k, layer in enumerate(layers)]
    module.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                module(x[i:i + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return [(torch.cat([m for m, _ in p]), torch.cat([v for _, v in p])) for p in parts]


def _features(moments, sources) -> np.ndarray:
    """Per item: mean squared standardized channel-mean shift and mean log variance ratio, for each layer."""
    cols = []
    for (m, v), (mu, var) in zip(moments, sources):
        var = var.double() + 1e-5
        cols.append((((m - mu.double()) ** 2) / var).mean(1))
        cols.append(torch.log((v + 1e-5) / var).mean(1))
    return torch.stack(cols, 1).cpu().numpy()


def _two_means(f: np.ndarray, iterations: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boolean assignment to the second of two clusters (features standardized; seeded at the extremes of the first
    principal direction, so the result is deterministic), with the centers it is nearest to and the standardization
    (mean, scale): ``Splitter`` assigns more items with them."""
    mu, sd = f.mean(0), f.std(0) + 1e-9
    z = (f - mu) / sd
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    proj = z @ vt[0]
    centers = np.stack([z[proj.argmin()], z[proj.argmax()]])
    assign, used = None, centers
    for _ in range(iterations):
        new = _nearest(z, centers)
        if new.all() or not new.any() or (assign is not None and (new == assign).all()):
            return new, centers, mu, sd  # one cluster took everything, or the assignment is stable
        used, centers = centers, np.stack([z[~new].mean(0), z[new].mean(0)])
        assign = new
    return assign, used, mu, sd


def _nearest(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return ((z - centers[1]) ** 2).sum(1) < ((z - centers[0]) ** 2).sum(1)


@dataclass(frozen=True)
class Splitter:
    """The split found on a sample, applied to more items: each goes to the nearer of the two centers."""

    mean: np.ndarray
    scale: np.ndarray
    centers: np.ndarray
    shifted_second: bool  # whether the second center is the shifted group

    def shifted(self, features: np.ndarray) -> np.ndarray:
        """Mask of the items whose features (``_features`` at the first LAYERS BN layers) fall in the shifted group."""
        group = _nearest((features - self.mean) / self.scale, self.centers)
        return group if self.shifted_second else ~group

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "centers": self.centers.tolist(),
                "shifted_second": self.shifted_second}

    @classmethod
    def from_dict(cls, data: dict) -> "Splitter":
        return cls(*(np.asarray(data[k]) for k in ("mean", "scale", "centers")), bool(data["shifted_second"]))


def _pooled_shift(moments, sources, members: np.ndarray) -> float:
    """BN shift score (``bn_adapt.shift_score``) of the group's pooled statistics against the source."""
    pooled = []
    for m, v in moments:
        mm, vv = m[members], v[members]
        mean = mm.mean(0)
        pooled.append((mean, vv.mean(0) + ((mm - mean) ** 2).mean(0)))
    return bn_adapt.shift_score(sources, pooled)


def shifted_group(module: nn.Module, x: torch.Tensor, batch_size: int, min_shift: float) -> tuple[np.ndarray | None, dict]:
    """(mask of the shifted items, facts) when the set is a clear mixture; (None, facts) when it is one distribution."""
    mask, facts, _ = find_groups(module, x, batch_size, min_shift)
    return mask, facts


def find_groups(module: nn.Module, x: torch.Tensor, batch_size: int,
                min_shift: float) -> tuple[np.ndarray | None, dict, Splitter | None]:
    """``shifted_group`` plus the ``Splitter`` that places more items (None when the set is not split).

    The groups are found, and the shifted one measured, on the first ``LAYERS`` BN layers; the other group must look
    like the source at *every* BN layer (a blur can show only deeper in the network). Costs one forward pass.
    """
    sources = bn_adapt.snapshot_statistics(module)
    n = len(x)
    if not sources:
        return None, {"split": False, "why": "no BatchNorm statistics to compare items with (a LayerNorm model)",
                      "forward_passes": 0}, None
    if n < 2 * MIN_ITEMS:
        return None, {"split": False, "why": "too few items to look for a mixture", "forward_passes": 0}, None
    moments = item_moments(module, x, batch_size)
    facts = {"forward_passes": n}
    group, centers, mu, sd = _two_means(_features(moments[:LAYERS], sources[:LAYERS]))
    small = min(group.sum(), (~group).sum())
    if small < max(MIN_ITEMS, MIN_SHARE * n):
        return None, {**facts, "split": False,
                      "why": f"no second group of at least {max(MIN_ITEMS, int(MIN_SHARE * n))} items"}, None
    near = [_pooled_shift(moments[:LAYERS], sources[:LAYERS], g) for g in (~group, group)]
    shifted = group if near[1] > near[0] else ~group
    high = max(near)  # how far the shifted group moved where acquisition shifts show
    low = _pooled_shift(moments, sources, ~shifted)  # the other group must look like the source at every layer
    facts["group_shifts"] = [round(low, 4), round(high, 4)]
    if not (low < min_shift and high >= MIN_HIGH * min_shift and high >= MIN_GAP * max(low, 1e-9)):
        return None, {**facts, "split": False, "why": "one distribution: the groups do not differ clearly"}, None
    facts.update(split=True, shifted=int(shifted.sum()), like_source=int((~shifted).sum()))
    return shifted, facts, Splitter(mu, sd, centers, bool(near[1] > near[0]))
