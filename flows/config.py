"""PipelineConfig: the one typed config of a Helios run, composed of each stage's own config (the flow's parameter)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from helios.models.config import ModelConfig
from helios.settings import StageConfig
from tasks.infer.config import InferConfig
from tasks.optimize.config import OptimizeConfig
from tasks.prepare.config import PrepareConfig
from tasks.refine.config import RefineConfig
from tasks.report.config import ReportConfig
from tasks.review.config import ReviewConfig

__all__ = ["DemoConfig", "ModelConfig", "PipelineConfig", "TrackingConfig"]


class DemoConfig(StageConfig):
    kind: str = "mnist"
    n: int = Field(2000, ge=10)
    corrupt: tuple[str, ...] = ("shot_noise", "motion_blur", "rotate", "translate", "fog")
    seed: int = 0


class TrackingConfig(StageConfig):
    mlflow_uri: str | None = Field(None, description="None: sqlite store under the work directory.")
    experiment: str = "helios"
    enabled: bool = True


class PipelineConfig(BaseModel):
    """Everything a run needs; each stage receives only its own part."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    input: str | None = Field(None, description="Input directory or fsspec URL; None: generate the demo corpus.")
    out: str = Field("helios-work/run", description="Run directory (reused to resume).")
    labels: str | None = Field(None, description="CSV with path,label columns to report accuracy.")
    model: ModelConfig = ModelConfig()
    demo: DemoConfig = DemoConfig()
    prepare: PrepareConfig = PrepareConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    infer: InferConfig = InferConfig()
    refine: RefineConfig = RefineConfig()
    review: ReviewConfig = ReviewConfig()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()
