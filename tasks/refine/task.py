"""Prefect wrapper of the refine stage.

NOT BUILT YET: this placeholder passes predictions through unchanged and says so in the report
(``refine.status = "not built: ..."``). The TTA / BN-adapt / TENT stage replaces it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.refine.config import RefineConfig


@task(name="refine", cache_policy=NO_CACHE)
def refine_stage(cfg: RefineConfig, predictions: pd.DataFrame, input_root: Path, adapter, onnx_path: Path,
                 work_dir: Path, providers: tuple[str, ...], threads: int,
                 truth: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    if not cfg.enabled:
        return predictions, {"status": "disabled"}
    return predictions, {"status": "not built: the refine stage (TTA, BN-adapt, TENT) is not implemented yet"}
