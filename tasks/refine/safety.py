"""Guards for test-time adaptation: class-mixed ordering and collapse detection. Imports only numpy.

Files are often grouped by class in folders and scanned in name order; adapting on such a stream is how TENT
collapses. ``mixed_order`` spreads every (predicted) class evenly over the whole sequence, so any window of it -
any adaptation batch - holds the classes in about their overall proportions.
"""
from __future__ import annotations

import numpy as np


def mixed_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(len(labels))`` that interleaves the classes (stratified shuffle).

    Items are shuffled, each gets its relative position within its own class (0 .. 1), and the sequence is sorted by
    that position with random tie-breaks: every class is dealt out evenly from start to end.
    """
    labels = np.asarray(labels)
    perm = rng.permutation(len(labels))
    shuffled = labels[perm]
    position = np.empty(len(perm))
    for cls in np.unique(shuffled):
        members = np.flatnonzero(shuffled == cls)
        position[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return perm[np.lexsort((rng.random(len(perm)), position))]


def batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive index slices of ``order`` of at most ``size`` items."""
    return [order[i:i + size] for i in range(0, len(order), size)]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Per-row entropy in nats."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def label_entropy(labels: np.ndarray, n_classes: int) -> float:
    """Entropy (nats) of the predicted-class histogram."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return float(entropy(counts / max(counts.sum(), 1.0)))


def detect_collapse(source_labels: np.ndarray, adapted_probs: np.ndarray, n_classes: int,
                    min_ratio: float, min_entropy: float) -> str | None:
    """Why the adapted model looks collapsed, or None.

    Collapse: outputs not finite; mean prediction entropy below ``min_entropy`` nats (over-confidence everywhere);
    or the predicted-class histogram's entropy below ``min_ratio`` times the source model's (the predictions piling
    into few classes). Only a *drop* counts: a source model confused into one class may spread out when adapted.
    """
    if not np.isfinite(adapted_probs).all():
        return "the adapted model outputs NaN or Inf"
    mean_entropy = float(entropy(adapted_probs).mean())
    if mean_entropy < min_entropy:
        return f"mean prediction entropy fell to {mean_entropy:.2g} nats (< refine.collapse_min_entropy={min_entropy})"
    adapted_labels = adapted_probs.argmax(1)
    before, after = label_entropy(source_labels, n_classes), label_entropy(adapted_labels, n_classes)
    if after < min_ratio * before:
        top = np.bincount(adapted_labels, minlength=n_classes).max() / len(adapted_labels)
        return (f"predicted classes degenerated: histogram entropy {after:.2f} nats vs {before:.2f} before "
                f"(< refine.collapse_ratio={min_ratio}); the largest class now holds {top:.0%} of the items")
    return None
