"""Config of the optimize (variants, quantization, selection) stage: *what* to build and how to judge it."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from helios.settings import StageConfig

VariantName = Literal["fp32", "fp32-fused", "fp16", "int8-dynamic", "int8-static"]
VARIANTS: tuple[str, ...] = ("fp32", "fp32-fused", "fp16", "int8-dynamic", "int8-static")


class OptimizeConfig(StageConfig):
    enabled: bool = Field(True, description="False: run the exported fp32 model as is.")
    variants: tuple[VariantName, ...] = VARIANTS
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(128, ge=8, description="Files from the input used to calibrate int8-static.")
    eval_samples: int = Field(256, ge=8, description="Files from the input used to compare variants.")
    embedder_eval_samples: int = Field(128, ge=8, description="Without labels, an embedder is judged on at most this "
                                       "many of them: its budget is a mean cosine, whose standard error over 128 "
                                       "files is a few 1e-4 (a classifier's top-1 agreement of 99.5 % needs 200+).")
    min_agreement: float = Field(0.995, ge=0, le=1, description="Classifier quality budget: top-1 agreement with fp32.")
    min_cosine: float = Field(0.99, ge=-1, le=1, description="Embedder quality budget: mean cosine to fp32.")
    on_provider_fallback: Literal["warn", "fail"] = "warn"
    latency_runs: int = Field(20, ge=5, description="Batch-1 runs per variant for p50/p95/p99.")
    rounds: int = Field(3, ge=1, le=10, description="Most timed passes per (variant, batch size), interleaved over "
                                                   "them; the slower half is dropped after each round; best kept.")
    time_budget_s: float = Field(20.0, gt=0, description="Seconds for building and measuring the variants: further "
                                 "ranking rounds stop once it is spent, or earlier once the ranking is clear.")
    batch_sizes: tuple[int, ...] = Field((1, 8, 32), description="Batch sizes tried for throughput; the best is kept.")
    min_gain: float = Field(0.05, ge=0, description="A lossy variant (int8, fp16) must beat the best lossless one "
                                                   "by this fraction of throughput, or the lossless one is kept.")
    int8_retries: int = Field(2, ge=0, le=4, description="int8-dynamic: times to retry with the most sensitive "
                                                         "MatMuls kept in fp32 when quality misses the budget.")
    percentile: float = Field(99.999, gt=90, le=100, description="Percentile calibration: the kept percentile.")
    # read by the flows (flows/reuse.py, flows/tracking_models.py), not by the stage's core
    reuse_champion: bool = Field(True, description="Reuse this hardware class's registered champion when it was "
                                 "optimized from the same model and settings (prepare and optimize are skipped).")
    max_regression: float = Field(0.5, ge=0, le=100, description="Accuracy points a new champion may lose against "
                                  "the current one on the labelled sample (the promotion gate).")

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(b < 1 for b in value):
            raise ValueError(f"batch_sizes {value} must be a non-empty list of positive integers, e.g. [1, 8, 32]")
        return tuple(sorted(set(value)))

    @field_validator("variants")
    @classmethod
    def _fp32_first(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # fp32 is the quality reference and the fallback choice; every run builds it.
        return ("fp32", *(v for v in VARIANTS if v in value and v != "fp32"))
