"""Prefect wrapper of the refine stage: one task around the pure core. No retries: the work is deterministic."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.refine.context import RefineContext


@task(name="refine", cache_policy=NO_CACHE)
def refine_stage(ctx: RefineContext, predictions: pd.DataFrame, input_root: Path,
                 truth: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict]:
    """TTA / BN-adapt / TENT on the items below ``ctx.cfg.threshold``; see ``tasks.refine.core.refine_predictions``.
    The core is imported here, not when the pipeline is; it loads torch (3.7 s) only when there is work: a run with
    refine off, and an unchanged rerun answered by the kept answers, never load torch for it."""
    from tasks.refine.core import refine_predictions

    return refine_predictions(ctx, predictions, input_root, truth)
