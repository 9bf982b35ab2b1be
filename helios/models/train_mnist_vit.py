"""Train the built-in mnist-vit reproducibly: ``python -m helios.models.train_mnist_vit``.

The same 4,000 digits, augmentation and loop as ``train_mnist`` (mnist-cnn), with AdamW, a short warm-up and label
smoothing (what small ViTs need on small data). Writes ``weights/mnist_vit.pt`` (a state_dict, loadable with
``weights_only=True``) and a JSON recipe beside it (held-back accuracy, seconds).
"""
from __future__ import annotations

import json

from helios.models.mnist_vit import WEIGHTS, build_network
from helios.models.train_mnist import train_digits


def train(epochs: int = 30, seed: int = 0) -> dict:
    import torch

    def optimizer(params, steps):
        opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.05)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)

    return train_digits(build_network, optimizer, WEIGHTS, epochs, seed, label_smoothing=0.1)


if __name__ == "__main__":
    print(json.dumps(train(), indent=2))
