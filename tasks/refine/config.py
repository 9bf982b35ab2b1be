"""Config of the TTA/TTT refinement stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.base import StageConfig


class RefineConfig(StageConfig):
    enabled: bool = True
    threshold: float = Field(0.9, ge=0, le=1, description="Items below this confidence are refined.")
    methods: tuple[Literal["tta", "bn-adapt", "tent"], ...] = ("bn-adapt", "tent", "tta")
    tta_policy: str = "standard"
    tta_merge: Literal["mean", "gmean", "max", "tsharpen"] = "mean"
    tta_adaptive: bool = True
    tent_steps: int = Field(1, ge=1)
    tent_lr: float = Field(1e-3, gt=0)
    tent_batch_size: int = Field(128, ge=1)
    max_rounds: int = Field(2, ge=1)
    seed: int = 0
