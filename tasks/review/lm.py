"""The one place that talks to DSPy's LM and LiteLLM: building LMs, one request, its outcome, prices, capabilities.

Retries and fallbacks are ours, not DSPy's or LiteLLM's: every attempt must pass the budget before it is sent and
be accounted after, and DSPy's backoff (1 s, 2 s, 4 s ...) is not configurable. So each LM makes exactly one
attempt per call (``num_retries=0``, which LiteLLM also hands to the OpenAI client as ``max_retries``).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Literal



def _import_litellm_offline() -> None:
    """Import LiteLLM with its bundled cost map: it fetches the map from GitHub at import unless told not to; runs
    here have no internet, and prices must not change under a run. The variable is set for the import only, so the
    process's environment is left as it was (LiteLLM reads it once, at import)."""
    if "litellm" in sys.modules:
        return
    name, before = "LITELLM_LOCAL_MODEL_COST_MAP", os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP")
    os.environ[name] = before or "True"
    try:
        import litellm  # noqa: F401
    finally:
        if before is None:
            os.environ.pop(name, None)


_import_litellm_offline()  # before DSPy, which imports LiteLLM lazily

import dspy  # noqa: E402

from helios.errors import UsageError  # noqa: E402
from tasks.review.budget import Price  # noqa: E402
from tasks.review.config import ReviewConfig  # noqa: E402

# List prices for models the bundled LiteLLM map lacks; review.prices overrides these and the map.
BUILTIN_PRICES: dict[str, tuple[float, float]] = {
    "openrouter/anthropic/claude-3.5-sonnet": (3.0, 15.0),
}

Kind = Literal["ok", "malformed", "transient", "failed"]


@dataclass(frozen=True)
class Attempt:
    """What one request came to. Token counts are the provider's own report (0 when it reported none)."""

    kind: Kind
    prediction: Any = None
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None  # class and HTTP status only: provider messages may echo content or credentials
    retry_after: float | None = None


def _model_info(model: str) -> dict[str, Any] | None:
    import litellm  # imported here: 3 s, and only needed once a review actually runs

    try:
        return dict(litellm.get_model_info(model))
    except Exception:  # LiteLLM raises several unrelated types for "not in the map"
        return None


def resolve_price(model: str, cfg: ReviewConfig) -> Price:
    """review.prices, else LiteLLM's cost map, else the built-in table; a UsageError naming the fix otherwise."""
    if model in cfg.prices:
        configured = cfg.prices[model]
        return Price(configured.input_per_mtok, configured.output_per_mtok, "config")
    info = _model_info(model) or {}
    per_in, per_out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if isinstance(per_in, (int, float)) and isinstance(per_out, (int, float)):
        return Price(per_in * 1e6, per_out * 1e6, "litellm")
    if model in BUILTIN_PRICES:
        return Price(*BUILTIN_PRICES[model], "builtin")
    raise UsageError(
        f"no price for review model {model!r}: LiteLLM's cost map does not know it; set "
        f"review.prices.{{{model!r}: {{input_per_mtok: USD, output_per_mtok: USD}}}} so the budget can be enforced"
    )


def sees_images(model: str) -> bool:
    """False only where LiteLLM's map says the model has no vision; unknown models are taken at the user's word."""
    info = _model_info(model)
    return not (info is not None and info.get("supports_vision") is False)


def build_lm(model: str, cfg: ReviewConfig, api_key: str) -> dspy.LM:
    """A DSPy LM on LiteLLM making one attempt per call, uncached (see cache.py), with the per-request timeout."""
    return dspy.LM(
        model,
        engine="litellm",
        cache=False,
        num_retries=0,
        api_key=api_key,
        api_base=cfg.api_base,
        timeout=cfg.timeout_s,
        max_tokens=cfg.max_output_tokens,
        temperature=0.0,
    )


def build_adapter() -> dspy.ChatAdapter:
    """ChatAdapter without its JSON fallback: that would send a second, unbudgeted request on a malformed answer."""
    return dspy.ChatAdapter(use_json_adapter_fallback=False)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__} (HTTP {status})" if status else type(exc).__name__


def _tokens(usage: dict[str, Any]) -> tuple[int, int]:
    entry = next(iter(usage.values()), {}) if usage else {}
    return int(entry.get("prompt_tokens") or 0), int(entry.get("completion_tokens") or 0)


def request_review(
    lm: dspy.LM, adapter: dspy.ChatAdapter, signature: type[dspy.Signature], inputs: dict[str, Any]
) -> Attempt:
    """Send one review request and classify its outcome; usage is tracked even when the answer does not parse."""
    with dspy.context(lm=lm, adapter=adapter, disable_history=True), dspy.track_usage() as tracker:
        try:
            prediction = dspy.Predict(signature)(**inputs)
            kind: Kind = "ok"
            error = None
            retry_after = None
        except dspy.AdapterParseError:
            prediction, kind, error, retry_after = None, "malformed", "answer did not parse", None
        except dspy.LMError as exc:
            prediction, error = None, _describe(exc)
            kind = "transient" if dspy.is_retryable_lm_error(exc) else "failed"
            retry_after = getattr(exc, "retry_after", None)
    input_tokens, output_tokens = _tokens(tracker.get_total_tokens())
    return Attempt(kind, prediction, input_tokens, output_tokens, error, retry_after)
