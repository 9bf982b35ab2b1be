"""Test-time augmentation for classifiers, after ttach: named policies of views, one merge mode, identity always in.

Imports only numpy, scipy and the project's softmax. A view maps a model-ready batch (N, C, H, W) to a batch of the
same shape; class labels do not move under these views, so no de-augmentation is needed. Views pad with the edge
value (``nearest``), so they work whatever the model's normalization. All views of a batch go to ONNX Runtime in one
call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage, sparse

from helios.models.base import softmax

MERGE_MODES = ("mean", "gmean", "max", "tsharpen")
CALL_BYTES = 1 << 20  # inputs per ONNX Runtime call: 334 views of a 28x28 digit, 1 of a 224x224 RGB image
MATRIX_PIXELS = 4096  # images up to 64x64 get affine views as a precomputed sparse matrix
_AFFINE_MAPS: dict[tuple, sparse.csr_matrix] = {}  # (degrees, factor, height, width) -> matrix, made once per process


class PolicyError(ValueError):
    """An unknown policy or merge mode, or a modality without a TTA policy."""


@dataclass(frozen=True)
class View:
    """A named augmentation: a function from a model-ready batch to a batch of the same shape."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The augmented batch."""
        return self.fn(x)


@dataclass(frozen=True)
class Policy:
    """A named set of views (identity first) and how their predictions merge."""

    name: str
    views: tuple[View, ...]
    merge: str

    @property
    def size(self) -> int:
        """How many views: the forward passes per augmented item."""
        return len(self.views)


def identity() -> View:
    """The unchanged batch."""
    return View("identity", lambda x: x)


def shift(dy: int, dx: int) -> View:
    """Move the content by (dy, dx) pixels; the uncovered border repeats the edge."""
    def fn(x):
        pad = max(abs(dy), abs(dx))
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
        h, w = x.shape[2:]
        return padded[:, :, pad - dy:pad - dy + h, pad - dx:pad - dx + w]
    return View(f"shift({dy},{dx})", fn)


def affine(degrees: float = 0.0, factor: float = 1.0) -> View:
    """Rotate by ``degrees`` and scale by ``factor`` about the image centre (bilinear, edge padding).

    The map is linear, so for images up to ``MATRIX_PIXELS`` it is applied as a sparse matrix made once per image
    size from its answers on the basis images (the same numbers, about 30 times faster on 28x28 digits)."""
    def transform(x):
        t = np.deg2rad(degrees)
        inv = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / factor  # output -> input coordinates
        center = (np.array(x.shape[2:]) - 1) / 2
        matrix = np.eye(4)
        matrix[2:, 2:] = inv
        offset = np.zeros(4)
        offset[2:] = center - inv @ center
        return ndimage.affine_transform(x, matrix, offset=offset, order=1, mode="nearest")

    def fn(x):
        h, w = x.shape[2:]
        if h * w > MATRIX_PIXELS:
            return transform(x).astype(x.dtype)
        key = (degrees, factor, h, w)
        if key not in _AFFINE_MAPS:
            basis = transform(np.eye(h * w).reshape(h * w, 1, h, w))
            _AFFINE_MAPS[key] = sparse.csr_matrix(basis.reshape(h * w, h * w).T)
        flat = x.reshape(-1, h * w).astype(np.float64)
        return (_AFFINE_MAPS[key] @ flat.T).T.reshape(x.shape).astype(x.dtype)
    return View(f"affine({degrees:g}deg,x{factor:g})", fn)


def noise(sigma: float, seed: int = 0) -> View:
    """Add Gaussian noise of ``sigma`` times the batch's standard deviation (fixed seed: reproducible)."""
    def fn(x):
        rng = np.random.default_rng(seed)
        return (x + rng.normal(0.0, sigma * float(x.std()) + 1e-12, x.shape)).astype(x.dtype)
    return View(f"noise({sigma:g})", fn)


IMAGE_POLICIES: dict[str, Callable[[], list[View]]] = {
    "light": lambda: [shift(1, 0), shift(-1, 0), shift(0, 1), shift(0, -1)],
    "standard": lambda: [shift(1, 0), shift(-1, 0), shift(0, 1), shift(0, -1), affine(degrees=10), affine(degrees=-10),
                         affine(factor=0.9), affine(factor=1.1)],
    "wide": lambda: [shift(1, 0), shift(-1, 0), shift(0, 1), shift(0, -1), shift(2, 2), shift(-2, -2),
                     affine(degrees=10), affine(degrees=-10), affine(degrees=20), affine(degrees=-20),
                     affine(factor=0.85), affine(factor=1.15), noise(0.3)],
}
POLICIES: dict[str, dict[str, Callable[[], list[View]]]] = {"image": IMAGE_POLICIES, "text": {}}


def build_policy(name: str, merge: str, modality: str) -> Policy:
    """The named policy for ``modality`` with the identity view first; unknown names raise PolicyError."""
    if merge not in MERGE_MODES:
        raise PolicyError(f"refine.tta_merge={merge!r} is not a merge mode: use one of {', '.join(MERGE_MODES)}")
    table = POLICIES.get(modality)
    if not table:
        raise PolicyError(f"no {modality} TTA policy: TTA applies to image models")
    if name not in table:
        raise PolicyError(f"refine.tta_policy={name!r} is not a {modality} policy: use one of {', '.join(table)}")
    views = [identity(), *(v for v in table[name]() if v.name != "identity")]
    return Policy(name, tuple(views), merge)


def augment(x: np.ndarray, policy: Policy) -> np.ndarray:
    """(N, ...) -> (V * N, ...): view-major, so rows [v * N:(v + 1) * N] are view v."""
    return np.concatenate([view(x) for view in policy.views], axis=0)


def merge_views(probs: np.ndarray, mode: str) -> np.ndarray:
    """Merge (V, N, K) per-view class probabilities into (N, K) probabilities."""
    if mode == "mean":
        merged = probs.mean(0)
    elif mode == "gmean":
        merged = np.exp(np.log(np.clip(probs, 1e-12, 1.0)).mean(0))
    elif mode == "max":
        merged = probs.max(0)
    elif mode == "tsharpen":
        merged = np.sqrt(np.clip(probs, 0.0, 1.0)).mean(0)  # ttach's tsharpen: x ** 0.5, then the mean
    else:
        raise PolicyError(f"merge mode {mode!r}: use one of {', '.join(MERGE_MODES)}")
    return merged / merged.sum(1, keepdims=True)


def predict_tta(run: Callable[[dict], list], input_name: str, x: np.ndarray, policy: Policy,
                batch_size: int = 256) -> np.ndarray:
    """Merged TTA probabilities (N, K): per batch, all views go through ``run``, in calls of at most ``CALL_BYTES``
    of inputs (ONNX Runtime keeps the memory of its largest call; answers do not depend on how a batch is cut)."""
    out = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        views = augment(chunk, policy)
        step = max(1, CALL_BYTES // max(1, views[0].nbytes))
        logits = np.concatenate([run({input_name: views[i:i + step]})[0] for i in range(0, len(views), step)])
        probs = softmax(logits.astype(np.float64)).reshape(policy.size, len(chunk), -1)
        out.append(merge_views(probs, policy.merge))
    return np.concatenate(out) if out else np.zeros((0, 0))
