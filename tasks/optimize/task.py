"""Prefect wrapper of the optimize stage. No retries: building and measuring variants is deterministic."""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from helios.models.base import ModelAdapter
from tasks.optimize.config import OptimizeConfig
from tasks.optimize.core import optimize_model
from tasks.optimize.known import KnownFailure
from tasks.optimize.result import OptimizeResult


@task(name="optimize", cache_policy=NO_CACHE)
def optimize_stage(cfg: OptimizeConfig, adapter: ModelAdapter, prepared, sample_paths: list[Path], out_dir: Path,
                   profile, recommendation, truth: dict[str, str] | None = None, run_items: int | None = None,
                   known: list[KnownFailure] | tuple = ()) -> OptimizeResult:
    return optimize_model(cfg, adapter, prepared, sample_paths, out_dir, profile, recommendation, truth, run_items,
                          known)
