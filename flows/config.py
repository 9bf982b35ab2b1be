"""PipelineConfig: the one typed config of a Helios run, composed of each stage's own config (the flow's parameter)."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from helios.models.config import ModelConfig
from helios.settings import StageConfig
from tasks.infer.config import InferConfig
from tasks.optimize.config import OptimizeConfig
from tasks.prepare.config import PrepareConfig
from tasks.refine.config import RefineConfig
from tasks.report.costs import DEFAULT_HOURLY_USD, KINDS
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
    system_metrics_s: float | None = Field(5.0, gt=0, description="Seconds between the run's system metrics "
                                           "samples (CPU, memory, disk, network, GPU); None: not sampled.")
    trace_review: bool = Field(True, description="Each item the LLM review sends as an MLflow trace on the run.")
    trace_images: bool = Field(False, description="Keep reviewed images in those traces (data URIs: large).")
    hourly_usd: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_HOURLY_USD),
        description="USD per hour of one GPU (gpu classes) or one core (cpu classes), by key: cpu, gpu, or kind-fragment "
                    "(gpu-h100); the longest matching key wins. Defaults and their sources: tasks/report/costs.py.")
    champion_class: str | None = Field(None, description="Hardware class whose champion the global `champion` alias "
                                       "names (the class the deployment serves on); None: the class that holds it "
                                       "now, else the first class to get a champion.")
    schedule_interval_s: float = Field(86400, gt=0, description="Period of the schedule this config runs under "
                                       "(the nightly cron: 1 day); exported for the no-successful-run alert.")

    @field_validator("hourly_usd")
    @classmethod
    def _prices(cls, table: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in table.items() if not v >= 0 or k.partition("-")[0] not in KINDS
               or not re.fullmatch(r"[A-Za-z0-9.\-]+", k)}
        if bad:
            raise ValueError(f"tracking.hourly_usd: {bad} are not valid: keys are cpu, gpu or kind-fragment (letters, "
                             "digits, dashes, e.g. gpu-h100), prices USD/hour >= 0")
        return table


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
