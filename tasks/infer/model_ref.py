"""ModelRef: everything a worker needs to rebuild the model, and the identity that keys incremental reruns."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from helios.models.config import ModelConfig


class ModelRef(BaseModel):
    """Serializable model handle shipped to shard workers (never the adapter or the session)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelConfig
    onnx_path: str
    variant: str
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0
    identity: str


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def model_identity(model: ModelConfig, onnx_path: Path | str, variant: str) -> str:
    """Hash of the model recipe, the variant name, the variant file's bytes and the decode limits.

    Providers and threads are left out on purpose: they change speed, not results. ``allow_pickle`` is left out
    too (it decides whether a model loads, not what it answers).
    """
    recipe = {"model": model.model_dump(mode="json", exclude={"allow_pickle", "max_image_pixels"}),
              "variant": variant, "onnx_sha256": file_sha256(onnx_path), "max_pixels": model.max_image_pixels}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]


def make_model_ref(model: ModelConfig, onnx_path: Path | str, variant: str = "fp32",
                   providers: tuple[str, ...] = ("CPUExecutionProvider",), intra_op_threads: int = 0) -> ModelRef:
    """Build a ModelRef, computing its identity from the recipe and the ONNX file."""
    return ModelRef(model=model, onnx_path=str(onnx_path), variant=variant, providers=tuple(providers),
                    intra_op_threads=intra_op_threads, identity=model_identity(model, onnx_path, variant))
