"""ModelConfig: which model a run uses and how it is loaded (a foundation type: every layer may read it)."""
from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from helios.settings import StageConfig


class ModelConfig(StageConfig):
    """Which model: a built-in name, an ONNX file, ``module:factory`` (+ checkpoint) or a Hugging Face directory."""

    name: str = "mnist-cnn"
    checkpoint: str | None = Field(None, description="Weights for a module:factory model.")
    modality: str | None = Field(None, description="image | text, for user models.")
    labels: tuple[str, ...] | None = Field(None, description="Class names for user classifiers.")
    label_descriptions: dict[str, str] | None = Field(
        None, description="Text zero-shot: label -> description embedded and compared with each file."
    )
    allow_pickle: bool = Field(False, description="Allow full-pickle torch checkpoints (only for files you trust).")
    max_image_pixels: int = Field(50_000_000, ge=1, description="Decompression-bomb guard for image inputs.")
    image_size: tuple[int, int] | None = Field(None, description="(height, width) for user image models.")
    channels: int | None = Field(None, description="1 or 3 input channels for user image models.")
    mean: tuple[float, ...] | None = Field(
        None, description="User image models: per-channel mean subtracted after scaling pixels to [0, 1], "
                          "e.g. ImageNet [0.485, 0.456, 0.406]; one value for every channel, or one per channel.")
    std: tuple[float, ...] | None = Field(
        None, description="User image models: per-channel std the centred pixels are divided by, e.g. ImageNet "
                          "[0.229, 0.224, 0.225]; default 1.")

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (not value or any(v <= 0 for v in value)):
            raise ValueError(f"std {list(value)} must be positive numbers, e.g. [0.229, 0.224, 0.225]")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        """``--set model.labels=[0,1,2]`` parses as numbers; class names are text."""
        if isinstance(value, (list, tuple)):
            return tuple(v if isinstance(v, str) else str(v) for v in value)
        return value
