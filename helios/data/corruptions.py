"""MNIST-C style corruptions (google-research/mnist-c) on uint8 (N, 28, 28) digit arrays.

Each function takes images and a numpy Generator and returns new uint8 images; severities follow MNIST-C's
single-severity setup.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


def shot_noise(images, rng):
    x = images.astype(np.float64) / 255.0
    return _clip(rng.poisson(x * 60) / 60 * 255)


def impulse_noise(images, rng):
    x = images.copy()
    mask = rng.random(x.shape)
    x[mask < 0.05] = 0
    x[mask > 0.95] = 255
    return x


def rotate(images, rng):
    angles = rng.uniform(-45, 45, len(images))
    return np.stack([_clip(ndimage.rotate(im.astype(float), a, reshape=False, order=1)) for im, a in zip(images, angles)])


def translate(images, rng):
    shifts = rng.integers(-5, 6, size=(len(images), 2))
    return np.stack([_clip(ndimage.shift(im.astype(float), s, order=0)) for im, s in zip(images, shifts)])


def motion_blur(images, rng):
    out = []
    for im in images:
        k = np.zeros((7, 7))
        k[3, :] = 1 / 7
        k = ndimage.rotate(k, rng.uniform(-45, 45), reshape=False, order=1)
        out.append(_clip(ndimage.convolve(im.astype(float), k / max(k.sum(), 1e-6))))
    return np.stack(out)


def fog(images, rng):
    base = rng.random((len(images), 7, 7))
    haze = np.stack([ndimage.zoom(b, 4, order=3) for b in base])
    return _clip(images.astype(float) + haze * 150)


CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": shot_noise, "impulse_noise": impulse_noise, "rotate": rotate, "translate": translate,
    "motion_blur": motion_blur, "fog": fog,
}


def apply_corruption(name: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply the named corruption; unknown names raise ValueError listing the valid ones."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}: choose from {', '.join(sorted(CORRUPTIONS))}")
    return CORRUPTIONS[name](images, rng)
