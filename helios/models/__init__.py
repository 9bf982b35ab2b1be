"""Model registry: built-in names, ONNX files, ``module:factory`` and Hugging Face directories."""
from __future__ import annotations

import re
from pathlib import Path

from helios.errors import UsageError
from helios.models.base import Decoded, InputError, ModelAdapter, Scored
from helios.models.config import ModelConfig

BUILT_IN = ("mnist-cnn", "mnist-vit", "minilm")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

__all__ = ["BUILT_IN", "Decoded", "InputError", "ModelAdapter", "ModelConfig", "Scored", "is_factory", "load_model"]


def is_factory(name: str) -> bool:
    """Is ``name`` a ``module:factory`` model (code that load_model imports and runs)?"""
    return bool(_FACTORY.match(name))


def load_model(cfg: ModelConfig) -> ModelAdapter:
    """Resolve ``cfg.name`` to an adapter, or raise a UsageError naming the forms."""
    name, allow_pickle, max_pixels = cfg.name, cfg.allow_pickle, cfg.max_image_pixels
    if name == "mnist-vit":
        from helios.models.mnist_vit import load_mnist_vit

        return load_mnist_vit(max_pixels)
    if name == "mnist-cnn":
        from helios.models.mnist_cnn import load_mnist_cnn

        return load_mnist_cnn(max_pixels)
    if name == "minilm":
        from helios.models.minilm import load_sentence_model

        return load_sentence_model(None, cfg.label_descriptions)
    path = Path(name)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise UsageError(f"model file {path} does not exist: pass an existing .onnx file")
        from helios.models.user import load_onnx_classifier

        return load_onnx_classifier(path, cfg.labels, cfg.image_size, cfg.channels, max_pixels, cfg.mean, cfg.std)
    if path.is_dir() and (path / "config.json").is_file():
        from helios.models.hf import load_hf_model

        return load_hf_model(path, cfg)  # dispatched on config.json's architectures
    if is_factory(name):
        from helios.models.user import load_torch_classifier

        return load_torch_classifier(name, cfg.checkpoint, cfg.labels, cfg.image_size, cfg.channels, allow_pickle, max_pixels,
                                     cfg.mean, cfg.std)
    raise UsageError(
        f"unknown model {name!r}: use a built-in name ({', '.join(BUILT_IN)}), a .onnx file, "
        "a Hugging Face model directory, or module:factory with model.checkpoint"
    )
