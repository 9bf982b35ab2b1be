"""Prefect wrapper of the refine stage: one task around the pure core. No retries: the work is deterministic."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from helios.models.base import ModelAdapter
from tasks.refine.config import RefineConfig
from tasks.refine.core import refine_predictions


@task(name="refine", cache_policy=NO_CACHE)
def refine_stage(cfg: RefineConfig, predictions: pd.DataFrame, input_root: Path, adapter: ModelAdapter,
                 onnx_path: Path, work_dir: Path, providers: tuple[str, ...], threads: int,
                 truth: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """TTA / BN-adapt / TENT on the items below ``cfg.threshold``; see ``tasks.refine.core.refine_predictions``."""
    return refine_predictions(cfg, predictions, input_root, adapter, onnx_path, work_dir, providers, threads, truth)
