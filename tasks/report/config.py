"""Config of the report and validation stage."""
from __future__ import annotations

from typing import Literal

from tasks.base import StageConfig


class ReportConfig(StageConfig):
    html: bool = True
    validation: Literal["fail", "warn", "off"] = "fail"
