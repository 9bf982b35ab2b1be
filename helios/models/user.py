"""User image classifiers: an ONNX file, or a PyTorch ``module:factory`` with a checkpoint."""
from __future__ import annotations

import hashlib
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helios.errors import UsageError
from helios.models.base import Decoded, ModelAdapter
from helios.models.images import decode_image


def import_factory(spec: str):
    """``module:factory`` -> the callable. The working directory is searched too (as ``python -m`` and uvicorn
    do), so ``helios run --model mynet:build`` finds ./mynet.py from the installed ``helios`` command."""
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # after the installed packages: a local file never shadows a library
    return getattr(importlib.import_module(module_name), attr)


@dataclass
class ImageClassifier(ModelAdapter):
    """Images resized to ``size``, scaled to [0, 1] (then ``(x - mean) / std`` when set), as NCHW float32 under
    ``input_names[0]``."""

    size: tuple[int, int] = (28, 28)
    channels: int = 1
    factory: str | None = None
    checkpoint: Path | None = None
    allow_pickle: bool = False
    max_pixels: int = 50_000_000
    mean: tuple[float, ...] | None = None  # per channel, on the [0, 1] scale (model.mean / model.std)
    std: tuple[float, ...] | None = None

    def torch_module(self):
        if self.factory is None:
            return None
        import torch

        try:
            net = import_factory(self.factory)()
        except (ImportError, AttributeError) as exc:
            raise UsageError(f"model {self.factory!r} cannot be built ({exc}): give module:factory of a module in "
                             "the working directory or on PYTHONPATH") from exc
        if self.checkpoint is not None:
            try:
                state = torch.load(self.checkpoint, weights_only=not self.allow_pickle, map_location="cpu")
            except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for refused or bad files
                raise UsageError(
                    f"checkpoint {self.checkpoint} could not be loaded with weights_only=True ({type(exc).__name__}); "
                    "save a state_dict, or set prepare.allow_pickle=true for a file you trust"
                ) from exc
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        return net.eval()

    def example_inputs(self, batch: int = 2) -> dict[str, np.ndarray]:
        return {self.input_names[0]: np.zeros((batch, self.channels, *self.size), dtype=np.float32)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {self.input_names[0]: {0: "batch"}, "logits": {0: "batch"}}

    def preprocess(self, data: bytes) -> Decoded:
        return Decoded(decode_image(data, self.size, self.channels, self.max_pixels))

    def collate(self, items: list[Decoded]) -> dict[str, np.ndarray]:
        x = np.stack([d.value for d in items]).astype(np.float32) / 255.0
        if self.mean is not None or self.std is not None:
            shape = (1, -1, 1, 1)  # broadcast over N, H, W
            mean = np.asarray(self.mean or (0.0,), np.float32).reshape(shape)
            std = np.asarray(self.std or (1.0,), np.float32).reshape(shape)
            x = (x - mean) / std
        return {self.input_names[0]: x}


def _per_channel(values, what: str, channels: int) -> tuple[float, ...] | None:
    """``model.mean`` / ``model.std`` hold one value for all channels or one per channel."""
    if values is None:
        return None
    if len(values) not in (1, channels):
        allowed = "1 value" if channels == 1 else f"1 or {channels} values"
        raise UsageError(f"{what} has {len(values)} values but the model takes {channels} channel(s): give {allowed}")
    return tuple(float(v) for v in values)


def _require(value, what: str, example: str):
    if value is None:
        raise UsageError(f"a user model needs {what}: set it, e.g. --set {example}")
    return value


def load_onnx_classifier(path: Path, labels, size=None, channels=None, max_pixels=50_000_000, mean=None,
                         std=None) -> ImageClassifier:
    """Read input name and shape from the ONNX file; labels come from config (or class_0..N-1 from the output width)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError) as exc:
        raise UsageError(f"{path} is not a readable ONNX model ({type(exc).__name__}): pass a valid .onnx file") from exc
    inp = model.graph.input[0]
    dims = [d.dim_value or None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise UsageError(f"{path} input {inp.name!r} has shape {dims}: Helios runs ONNX image classifiers with NCHW input")
    channels = channels or dims[1] or 1
    size = tuple(size or (dims[2] or 28, dims[3] or 28))
    out_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    labels = tuple(labels) if labels else tuple(f"class_{i}" for i in range(out_dims[-1] or 0))
    if not labels:
        raise UsageError(f"{path}: the number of classes is not in the graph; set model.labels")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return ImageClassifier(
        name=path.stem, modality="image", task="classifier", labels=labels, input_names=(inp.name,),
        output_names=(model.graph.output[0].name,), onnx_path=path, size=size, channels=channels,
        recipe={"model": str(path), "onnx_sha256": digest}, max_pixels=max_pixels,
        mean=_per_channel(mean, "model.mean", channels), std=_per_channel(std, "model.std", channels),
    )


def load_torch_classifier(factory: str, checkpoint: str | None, labels, size, channels, allow_pickle: bool,
                          max_pixels=50_000_000, mean=None, std=None) -> ImageClassifier:
    labels = _require(labels, "model.labels", "'model.labels=[cat,dog]'")
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and not ckpt.is_file():
        raise UsageError(f"checkpoint {ckpt} does not exist: pass the path of the saved weights in model.checkpoint")
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:16] if ckpt else None
    return ImageClassifier(
        name=factory.replace(":", "."), modality="image", task="classifier", labels=tuple(labels), input_names=("image",),
        size=tuple(size or (28, 28)), channels=channels or 1, factory=factory, checkpoint=ckpt, allow_pickle=allow_pickle,
        recipe={"model": factory, "checkpoint_sha256": digest}, max_pixels=max_pixels,
        mean=_per_channel(mean, "model.mean", channels or 1), std=_per_channel(std, "model.std", channels or 1),
    )
