"""Prefect wrapper of the LLM review: key lookup, item selection, the core, the review columns."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NONE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from tasks.review.config import ReviewConfig
from tasks.review.core import RequestHook, ReviewItem, apply_review, review_items, select_for_review


def resolve_api_key(cfg: ReviewConfig) -> str | None:
    """The key from ``$<cfg.api_key_env>``, else the Prefect Secret block ``cfg.api_key_secret_block``, else None."""
    key = os.environ.get(cfg.api_key_env, "").strip()
    if key:
        return key
    if not cfg.api_key_secret_block:
        return None
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(cfg.api_key_secret_block).get()
    except ValueError:  # Block.load's "Unable to find block document named ..."
        return None
    return str(value).strip() or None


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called as review_stage.fn(...) outside a run
        return logging.getLogger("helios.review")


# No retries: LM retries and fallbacks live in the LM layer. No Prefect cache: the stage has its own answer cache,
# and hashing the predictions frame for a cache key would cost more than the review's bookkeeping.
@task(name="review", cache_policy=NONE)
def review_stage(
    cfg: ReviewConfig,
    predictions: pd.DataFrame,
    input_root: str,
    labels: tuple[str, ...],
    modality: str,
    cache_dir: str,
    on_request: RequestHook | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Review the least confident predictions; return them with the review columns, and the review summary.

    ``on_request`` sees each item sent to a model (the flow traces the requests with it)."""
    logger = _logger()
    root = Path(input_root).resolve()
    selected = select_for_review(predictions, cfg.max_items)
    # Paths come from the input listing, not from file content or answers; still, the core reads them through
    # helios.reader confined to the root, so a path that leaves it is that item's error, not the run's.
    items = [ReviewItem(str(r.path), root / str(r.path), str(r.label), float(r.confidence))
             for r in selected.itertuples(index=False)]
    api_key = resolve_api_key(cfg) if cfg.enabled else None
    outcome = review_items(cfg, items, tuple(labels), modality, api_key, Path(cfg.cache_dir or cache_dir),
                           on_request, root)
    summary = outcome.summary
    if summary["status"].startswith("skipped"):
        logger.info("LLM review %s", summary["status"])
    else:
        logger.info(
            "LLM review: %d reviewed, %d unreviewed, %d skipped, %d from cache, $%.4f of $%.2f%s",
            summary["reviewed"], summary["unreviewed"], summary["skipped"], summary["cache_hits"],
            summary["cost_usd"], cfg.budget_usd, " (budget reached)" if summary["stopped_by_budget"] else "",
        )
    return apply_review(predictions, outcome.rows), summary
