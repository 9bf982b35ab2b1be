"""Tiny real adapters for the prepare tests: a classifier and an embedder whose export can be made to disagree."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from helios.models.base import Decoded, InputError, ModelAdapter


def build(kind: str, drift: float):
    """A small torch module; under ``torch.onnx.export`` it adds ``drift`` to its output (a wrong export)."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, x):
            out = self.body(x)
            if torch.onnx.is_in_onnx_export():
                out = out + drift * torch.arange(3, dtype=out.dtype)
            return out if kind == "classifier" else (out, out)

    return Tiny().eval()


@dataclass
class TinyAdapter(ModelAdapter):
    drift: float = 0.0

    def torch_module(self):
        return build(self.task, self.drift)

    def example_inputs(self, batch: int = 2) -> dict[str, np.ndarray]:
        return {"x": np.ones((batch, 4), dtype=np.float32)}

    def dynamic_axes(self):
        return {"x": {0: "batch"}, **{name: {0: "batch"} for name in self.output_names}}

    def preprocess(self, data: bytes) -> Decoded:
        values = data.decode().split(",")
        if len(values) != 4:
            raise InputError(f"expected 4 comma-separated numbers, got {len(values)}")
        return Decoded(np.array([float(v) for v in values], dtype=np.float32))

    def collate(self, items):
        return {"x": np.stack([d.value for d in items])}


def tiny(task: str = "classifier", drift: float = 0.0, onnx_path=None) -> TinyAdapter:
    outputs = ("logits",) if task == "classifier" else ("logits", "embeddings")
    return TinyAdapter(name="tiny", modality="image", task=task, labels=("a", "b", "c"), input_names=("x",),
                       output_names=outputs, onnx_path=onnx_path, recipe={"model": "tiny"}, drift=drift)


@pytest.fixture
def make_tiny():
    """``make_tiny(task="classifier", drift=0.0, onnx_path=None)`` -> a TinyAdapter."""
    return tiny


@pytest.fixture
def samples(tmp_path):
    """The user's own files: 20 rows of 4 numbers, plus one unusable file the gate skips."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(20):
        path = tmp_path / "input" / f"{i:02d}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(",".join(f"{v:.4f}" for v in rng.normal(size=4)))
        paths.append(path)
    bad = tmp_path / "input" / "bad.csv"
    bad.write_text("1,2")
    return [bad, *paths]
