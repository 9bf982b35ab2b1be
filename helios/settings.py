"""Shared base for the per-stage configs: frozen, strict pydantic models."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StageConfig(BaseModel):
    """A stage's typed config. Unknown keys are rejected; instances are immutable (derive with ``model_copy``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
