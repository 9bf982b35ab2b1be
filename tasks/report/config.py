"""Config of the report and validation stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from helios.settings import StageConfig


class ReportConfig(StageConfig):
    html: bool = Field(True, description="Write report.html (report.json is always written).")
    validation: Literal["fail", "warn", "off"] = Field(
        "fail", description="What a failed Great Expectations check does: fail the run, log a warning, or skip checks."
    )
    sample_rows: int = Field(5, ge=1, le=100, description="Rows shown per failing expectation and per error kind.")
    histogram_bins: int = Field(20, ge=5, le=100, description="Bins of the confidence histogram over [0, 1].")
