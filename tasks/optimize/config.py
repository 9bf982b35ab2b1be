"""Config of the optimize (variants, quantization, selection) stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.base import StageConfig

VariantName = Literal["fp32", "fp32-fused", "fp16", "int8-dynamic", "int8-static"]


class OptimizeConfig(StageConfig):
    enabled: bool = Field(True, description="False: run the exported fp32 model as is.")
    variants: tuple[VariantName, ...] = ("fp32", "fp32-fused", "fp16", "int8-dynamic", "int8-static")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(128, ge=8)
    eval_samples: int = Field(256, ge=8, description="Files from the input used to compare variants.")
    min_agreement: float = Field(0.995, ge=0, le=1, description="Classifier quality budget: top-1 agreement with fp32.")
    min_cosine: float = Field(0.99, ge=-1, le=1, description="Embedder quality budget: mean cosine to fp32.")
    on_provider_fallback: Literal["warn", "fail"] = "warn"
    latency_runs: int = Field(50, ge=5, description="Batch-1 runs per variant for p50/p95/p99.")
