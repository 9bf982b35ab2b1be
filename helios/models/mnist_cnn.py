"""Built-in ``mnist-cnn``: a small BatchNorm CNN digit classifier (weights trained by ``python -m helios.models.train_mnist``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helios.models.base import Decoded, ModelAdapter
from helios.models.images import decode_image

WEIGHTS = Path(__file__).parent / "weights" / "mnist_cnn.pt"
MEAN, STD = 0.1307, 0.3081
DIGITS = tuple(str(d) for d in range(10))


def build_network():
    """Two conv blocks with BatchNorm (so BN-adapt and TENT have something to adapt), then a small head."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10),
    )


def normalize(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), the normalization the network was trained with."""
    return ((images_uint8.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]


@dataclass
class MnistCnn(ModelAdapter):
    max_pixels: int = 50_000_000

    def torch_module(self):
        import torch

        net = build_network()
        net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
        return net.eval()

    def example_inputs(self, batch: int = 2) -> dict[str, np.ndarray]:
        return {"image": np.zeros((batch, 1, 28, 28), dtype=np.float32)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"image": {0: "batch"}, "logits": {0: "batch"}}

    def preprocess(self, data: bytes) -> Decoded:
        return Decoded(decode_image(data, (28, 28), 1, self.max_pixels))

    def collate(self, items: list[Decoded]) -> dict[str, np.ndarray]:
        return {"image": normalize(np.stack([d.value[0] for d in items]))}


def load_mnist_cnn(max_pixels: int = 50_000_000) -> MnistCnn:
    import hashlib

    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:16]
    return MnistCnn(
        name="mnist-cnn", modality="image", task="classifier", labels=DIGITS, input_names=("image",),
        recipe={"model": "mnist-cnn", "weights_sha256": digest}, max_pixels=max_pixels,
    )
