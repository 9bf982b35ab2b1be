"""The mixture check's per-item features as a small ONNX graph, so that placing every file of a large set in its
group runs in ONNX Runtime (several times faster than torch here) while the next chunk is decoded.

The graph is the source model up to its ``domains.LAYERS``-th BatchNorm layer (the exporter drops the layers after
it: nothing in the output depends on them) and the features of ``domains._features`` computed in float32.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tasks.refine import bn_adapt
from tasks.session import open_session


class FeatureProbe(nn.Module):
    """Per item: mean squared standardized channel-mean shift and mean log variance ratio at each of the first
    ``layers`` BN layers' inputs, against the source statistics (the variance as E[a²] - E[a]², in float32: within
    1e-5 of ``domains._features``'s float64 on MNIST)."""

    def __init__(self, module: nn.Module, layers: int):
        super().__init__()
        self.module = copy.deepcopy(module).cpu().eval()  # exported on the CPU, wherever the module was adapted
        self.norms = bn_adapt.tracked_layers(self.module)[:layers]
        self._seen: list[torch.Tensor] = []
        for layer in self.norms:
            layer.register_forward_pre_hook(lambda _module, inputs: self._seen.append(inputs[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._seen.clear()
        self.module(x)
        cols = []
        for a, layer in zip(self._seen, self.norms):
            if a.dim() == 4:  # global average pools run in ONNX Runtime's blocked layout: ~35 % faster than means
                mean = F.adaptive_avg_pool2d(a, 1).flatten(1)
                var = F.adaptive_avg_pool2d(a * a, 1).flatten(1) - mean * mean
            else:
                dims = tuple(range(2, a.dim()))
                mean = a.mean(dims) if dims else a
                var = (a * a).mean(dims) - mean * mean if dims else mean * 0
            source_var = layer.running_var + 1e-5
            cols.append(((mean - layer.running_mean) ** 2 / source_var).mean(1))
            cols.append(torch.log((var + 1e-5) / source_var).mean(1))
        return torch.stack(cols, 1)


def export_probe(module: nn.Module, layers: int, example: np.ndarray, folder: Path, opset: int) -> Path:
    """``FeatureProbe -> <folder>/probe.onnx`` (input ``x``, output ``features``, any batch size)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "probe.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings are about torch internals
        torch.onnx.export(FeatureProbe(module, layers), (torch.from_numpy(example),), str(path), dynamo=False,
                          opset_version=opset, input_names=["x"], output_names=["features"],
                          dynamic_axes={"x": {0: "n"}, "features": {0: "n"}})
    return path


def probe_session(path: Path, threads: int):
    """A CPU session of the probe graph: ``run(x) -> features``."""
    session = open_session(path, ("CPUExecutionProvider",), threads)
    return lambda x: session.run({"x": np.ascontiguousarray(x, dtype=np.float32)})[0].astype(np.float64)
