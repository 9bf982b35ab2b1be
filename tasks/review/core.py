"""LLM review, the pure core: pick the least confident predictions, ask an LLM for a second opinion, account for it.

Never imports Prefect or MLflow. DSPy and LiteLLM are imported only when a review actually runs (3-4 s).
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal

import pandas as pd

from helios.frames import is_in
from helios.reader import SafeReader, common_root
from tasks.review.budget import Budget
from tasks.review.cache import AnswerCache
from tasks.review.config import ReviewConfig

REVIEW_COLUMNS = ("review_status", "review_verdict", "review_label", "review_reason", "pre_review_label")


@dataclass(frozen=True)
class ReviewItem:
    path: str  # relative to the input root; a name, never opened
    abs_path: Path  # the only path read
    label: str
    confidence: float


@dataclass(frozen=True)
class ReviewRow:
    path: str
    status: Literal["reviewed", "unreviewed", "skipped"]
    verdict: str | None
    llm_label: str | None
    reason: str | None
    model: str | None
    cost_usd: float


@dataclass(frozen=True)
class ReviewOutcome:
    rows: list[ReviewRow]
    summary: dict[str, Any]


@dataclass(frozen=True)
class ReviewedItem:
    """What the ``on_request`` hook of ``review_items`` gets for each item sent to a model (cache hits send none).

    ``inputs`` are the prompt's inputs, file content included (an image as ``dspy.Image``): the hook decides what
    to keep. ``result`` is the reviewer's ItemResult, with ``requests``: every request, retries and fallbacks.
    The API key is in none of it.
    """

    item: ReviewItem
    inputs: dict[str, Any]
    result: Any


RequestHook = Callable[[ReviewedItem], None]


def missing_key_reason(cfg: ReviewConfig) -> str:
    """Why there is no key, naming where it was looked for and how to provide it."""
    if cfg.api_key_secret_block:
        return f"no API key in ${cfg.api_key_env} or the Prefect Secret block {cfg.api_key_secret_block!r}"
    return f"no API key in ${cfg.api_key_env} (set it or review.api_key_secret_block)"


def select_for_review(predictions: pd.DataFrame, max_items: int) -> pd.DataFrame:
    """The ``max_items`` least confident successful predictions, least confident first (ties by path)."""
    ok = predictions[predictions["status"] == "ok"]
    return ok.sort_values(["confidence", "path"], kind="mergesort").head(max_items)


def _summary(
    cfg: ReviewConfig, status: str, items: list[ReviewItem], rows: list[ReviewRow], **extra: Any
) -> dict[str, Any]:
    by_status = {s: sum(r.status == s for r in rows) for s in ("reviewed", "unreviewed", "skipped")}
    model_label = {item.path: item.label for item in items}
    reviewed = [r for r in rows if r.status == "reviewed"]
    agreed = sum(r.llm_label == model_label[r.path] for r in reviewed)
    summary = {
        "status": status, "model": cfg.model, "models": list(dict.fromkeys((cfg.model, *cfg.fallbacks))),
        "selected": len(items),
        **by_status,
        "rejected_labels": 0, "malformed": 0, "cache_hits": 0,
        "cost_usd": round(sum(r.cost_usd for r in rows), 6), "budget_usd": cfg.budget_usd, "stopped_by_budget": False,
        "per_model": {},
        "verdicts": {v: sum(r.verdict == v for r in reviewed) for v in ("agree", "disagree", "unsure")},
        "agreement_rate": agreed / len(reviewed) if reviewed else None,
        "relabeled": sum(r.verdict == "disagree" and r.llm_label != model_label[r.path] for r in reviewed),
    }
    summary.update(extra)
    return summary


def skip_review(cfg: ReviewConfig, items: list[ReviewItem], reason: str) -> ReviewOutcome:
    """Every item skipped for one reason; status ``skipped: <reason>``."""
    rows = [ReviewRow(i.path, "skipped", None, None, reason, None, 0.0) for i in items]
    return ReviewOutcome(rows, _summary(cfg, f"skipped: {reason}", items, rows))


def review_items(
    cfg: ReviewConfig,
    items: list[ReviewItem],
    labels: tuple[str, ...],
    modality: Literal["image", "text"],
    api_key: str | None,
    cache_dir: Path,
    on_request: RequestHook | None = None,
    root: Path | None = None,
) -> ReviewOutcome:
    """Review ``items`` (least confident first) within ``cfg.budget_usd``; skipped without a key or when disabled.

    ``on_request`` sees each item sent to a model, from the worker threads (the flow traces requests with it).
    Item files are read through ``helios.reader`` confined to ``root`` (default: the narrowest directory holding
    them all): a FIFO or a path out of the root is that item's error (``unreviewed`` with the reason)."""
    if modality not in ("image", "text"):
        raise ValueError(f"modality={modality!r} cannot be reviewed: expected 'image' or 'text'")
    if not labels:
        raise ValueError("labels is empty: the review needs the model's label set to check answers against")
    if not cfg.enabled:
        return skip_review(cfg, items, "disabled by review.enabled=false")
    if not api_key:
        return skip_review(cfg, items, missing_key_reason(cfg))
    if not items:
        return ReviewOutcome([], _summary(cfg, "done", [], []))

    from tasks.review import lm as lm_layer  # DSPy and LiteLLM, imported only for a real review
    from tasks.review.reviewer import Reviewer

    chain = tuple(dict.fromkeys((cfg.model, *cfg.fallbacks)))
    if modality == "image":
        chain = tuple(m for m in chain if lm_layer.sees_images(m))
        if not chain:
            return skip_review(cfg, items, "no vision-capable model among review.model and review.fallbacks")
    prices = {model: lm_layer.resolve_price(model, cfg) for model in chain}
    reviewer = Reviewer(
        cfg=cfg, labels=tuple(labels), modality=modality, chain=chain,
        lms={model: lm_layer.build_lm(model, cfg, api_key) for model in chain}, prices=prices,
        budget=Budget(cfg.budget_usd), cache=AnswerCache(Path(cache_dir) / "review"),
        reader=SafeReader(root if root is not None else common_root(i.abs_path for i in items), max_bytes=None),
    )
    results = _review_all(reviewer, items, cfg.max_concurrency, _reporter(on_request, items, api_key))
    rows = [
        ReviewRow(i.path, r.status, r.verdict, r.label, _redact(r.reason, api_key), r.model, round(r.cost_usd, 8))
        for i, r in zip(items, results)
    ]
    return ReviewOutcome(rows, _summary(
        cfg, "done", items, rows,
        rejected_labels=reviewer.counts["rejected_labels"], malformed=reviewer.counts["malformed"],
        cache_hits=reviewer.counts["cache_hits"], stopped_by_budget=reviewer.budget.exhausted,
        cost_usd=round(reviewer.budget.spent_usd, 6), models=list(chain),
        per_model={model: {**entry.as_dict(), **reviewer.cooldowns.as_dict(model)}
                   for model, entry in reviewer.ledger.items()},
    ))


def _reporter(on_request: RequestHook | None, items: list[ReviewItem], api_key: str) -> Callable[..., Any]:
    """(item index, pending, result) -> result, handing each item that sent requests to ``on_request``."""

    def report(index: int, pending: Any, result: Any) -> Any:
        if on_request is not None and result.requests:
            on_request(ReviewedItem(items[index], pending.inputs, replace(result, reason=_redact(result.reason,
                                                                                                   api_key))))
        return result

    return report


def _review_all(reviewer: Any, items: list[ReviewItem], max_concurrency: int,
                report: Callable[..., Any]) -> list[Any]:
    """Cache lookups in order, then the remaining items concurrently, first requests admitted in item order;
    each answer passes through ``report(index, pending, result)``."""
    from tasks.review.reviewer import Pending

    results = [reviewer.lookup(item.abs_path, item.label) for item in items]
    waiting = [(index, result) for index, result in enumerate(results) if isinstance(result, Pending)]
    if waiting:
        def ask(turn: int) -> Any:
            index, pending = waiting[turn]
            return report(index, pending, reviewer.ask(pending, turn))

        with ThreadPoolExecutor(max_workers=min(max_concurrency, len(waiting)), thread_name_prefix="review") as pool:
            answers = pool.map(ask, range(len(waiting)))
            for (index, _), answer in zip(waiting, answers):
                results[index] = answer
    return results


def _redact(text: str | None, secret: str) -> str | None:
    # Reasons hold class names and statuses only; this is the belt to those braces.
    return text.replace(secret, "***") if text and secret else text


def apply_review(predictions: pd.DataFrame, rows: list[ReviewRow]) -> pd.DataFrame:
    """A copy with the review columns; a ``disagree`` with a valid label relabels the row (final_stage 'review')."""
    out = predictions.copy(deep=False)  # copy-on-write: only the columns written are copied
    for column in REVIEW_COLUMNS:
        out[column] = pd.Series([None] * len(out), index=out.index, dtype=object)
    if "final_stage" not in out:
        out["final_stage"] = None
    position = {path: index for index, path in zip(out.index, out["path"])}
    for row in rows:
        index = position[row.path]
        out.at[index, "pre_review_label"] = out.at[index, "label"]
        out.at[index, "review_status"] = row.status
        out.at[index, "review_verdict"] = row.verdict
        out.at[index, "review_label"] = row.llm_label
        out.at[index, "review_reason"] = row.reason
        if row.status == "reviewed" and row.verdict == "disagree" and row.llm_label is not None:
            out.at[index, "label"] = row.llm_label
            out.at[index, "final_stage"] = "review"
    return out


def review_accuracy(df: pd.DataFrame, truth: dict[str, str]) -> dict[str, Any]:
    """Accuracy of the labels after review over labeled ok rows; on reviewed rows, the LLM's and the model's."""
    ok = df[(df["status"] == "ok") & is_in(df["path"], truth.keys())]
    expected = ok["path"].map(truth)
    reviewed = ok[ok.get("review_status", pd.Series(index=ok.index, dtype=object)) == "reviewed"]
    expected_reviewed = reviewed["path"].map(truth)

    def rate(hits: pd.Series) -> float | None:
        return float(hits.mean()) if len(hits) else None

    return {
        "labeled": len(ok),
        "accuracy_after_review": rate(ok["label"] == expected),
        "reviewed_labeled": len(reviewed),
        "llm_accuracy_on_reviewed": rate(reviewed["review_label"] == expected_reviewed),
        "model_accuracy_on_reviewed": rate(reviewed["pre_review_label"] == expected_reviewed),
    }


def review_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's figures as flat MLflow metric names (``review.<model>.cost_usd`` ...)."""
    metrics = {f"review.{k}": float(summary[k]) for k in (
        "reviewed", "unreviewed", "skipped", "rejected_labels", "malformed", "cache_hits", "cost_usd", "relabeled",
    ) if isinstance(summary.get(k), (int, float))}
    if isinstance(summary.get("agreement_rate"), float):
        metrics["review.agreement_rate"] = summary["agreement_rate"]
    for model, figures in (summary.get("per_model") or {}).items():
        name = re.sub(r"[^A-Za-z0-9_\-./ :]", "_", model)
        for key in ("requests", "errors", "cooldowns", "input_tokens", "output_tokens", "cost_usd"):
            if isinstance(figures.get(key), (int, float)):
                metrics[f"review.{name}.{key}"] = float(figures[key])
    return metrics
