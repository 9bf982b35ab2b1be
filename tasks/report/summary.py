"""RunSummary: what a pipeline run measured, typed; the report and MLflow tracking read it, report.json holds it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RunSummary:
    """One run's results, in report.json's order. Sections that stages return as dicts (refine, review, counts)
    stay dicts: their keys are documented by the stage that writes them."""

    hardware: dict[str, Any]
    recommendation: dict[str, Any]
    config: dict[str, Any]
    input: str
    labels: str | None
    model: dict[str, Any]  # name, variant, parity, hardware_class (where the variant was selected), ...
    counts: dict[str, int]
    stages: dict[str, float]
    variants: list[dict[str, Any]]
    throughput: list[dict[str, float]]
    files_per_s: float | None
    accuracy: dict[str, float]
    per_group: dict[str, dict[str, float]] | None
    refine: dict[str, Any]
    review: dict[str, Any]
    mlflow: dict[str, Any] = field(default_factory=dict)  # tracking_uri, run_id
    prefect: dict[str, Any] = field(default_factory=dict)  # flow_run_id, flow_run_url
    drift: dict[str, Any] = field(default_factory=dict)  # against the previous successful run (tasks/report/drift.py)
    costs: dict[str, Any] = field(default_factory=dict)  # compute and LLM USD (tasks/report/costs.py)
    outputs: dict[str, Any] = field(default_factory=dict)  # infer.outputs: list columns and widths, never values
    # infer.pool=gpu: the GPU worker that prepared, optimized and inferred (hardware, recommendation, stage seconds)
    worker: dict[str, Any] = field(default_factory=dict)

    @property
    def hardware_class(self) -> str | None:
        return self.hardware.get("hardware_class")

    @property
    def model_class(self) -> str | None:
        """The hardware class the variant was selected on and runs on: the GPU worker's with infer.pool=gpu."""
        return self.model.get("hardware_class") or self.hardware_class

    @property
    def llm_cost_usd(self) -> float:
        return float(self.review.get("cost_usd") or 0.0)

    @property
    def compute_cost_usd(self) -> float | None:
        return self.costs.get("compute_usd")

    @property
    def run_cost_usd(self) -> float:
        """Compute plus LLM USD (the LLM's alone when the hardware class has no price)."""
        return float(self.costs.get("total_usd", self.llm_cost_usd))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
