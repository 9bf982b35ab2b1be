"""The model abstraction: one small adapter per modality.

An adapter gives the torch module (None for ONNX-only models), example inputs for export, ``preprocess(bytes)`` for one
file, ``collate`` for a batch, and ``postprocess(logits)``. Every exported graph has a ``logits`` output; embedders
(text) and Hugging Face classifiers also output ``embeddings``. Nothing here imports Prefect or MLflow.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np


class InputError(ValueError):
    """A file that cannot be used as model input; the message is the reason shown in its error row."""


@dataclass(frozen=True)
class Decoded:
    """One preprocessed file: ``value`` is modality-specific (float array for images, str for text)."""

    value: Any
    warning: str | None = None  # e.g. "not UTF-8: decoded with replacement"


@dataclass(frozen=True)
class Scored:
    """Postprocessed batch: label index, confidence (top-1 probability) and top-k indices per row."""

    label_idx: np.ndarray
    confidence: np.ndarray
    topk: np.ndarray
    probs: np.ndarray


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ModelAdapter(ABC):
    name: str
    modality: Literal["image", "text"]
    task: Literal["classifier", "embedder"]
    labels: tuple[str, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...] = ("logits",)
    onnx_path: Path | None = None  # set for user ONNX files: export is skipped
    recipe: dict[str, Any] = field(default_factory=dict)  # what defines this model (hashed into run identity)

    @abstractmethod
    def torch_module(self):
        """The torch.nn.Module in eval mode returning logits (and embeddings for embedders; Hugging Face classifiers
        add them only while ``torch.onnx.export`` traces); None for ONNX files."""

    @abstractmethod
    def example_inputs(self, batch: int = 2) -> dict[str, np.ndarray]:
        """Inputs for export and smoke runs, keyed by input name."""

    @abstractmethod
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Dynamic axes per input/output name for ``torch.onnx.export``."""

    @abstractmethod
    def preprocess(self, data: bytes) -> Decoded:
        """Decode one file's bytes; raise InputError with a readable reason for unusable input."""

    @abstractmethod
    def collate(self, items: list[Decoded]) -> dict[str, np.ndarray]:
        """Stack decoded items into one batch of ONNX inputs."""

    def postprocess(self, logits: np.ndarray, k: int = 3) -> Scored:
        probs = softmax(logits.astype(np.float64))
        order = np.argsort(-probs, axis=1)[:, :k]
        idx = order[:, 0]
        return Scored(idx, probs[np.arange(len(idx)), idx].astype(np.float32), order, probs.astype(np.float32))
