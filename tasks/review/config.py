"""Config of the LLM review stage."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from helios.settings import StageConfig


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ReviewConfig(StageConfig):
    enabled: bool = True
    model: str = "openrouter/anthropic/claude-3.5-sonnet"
    api_base: str | None = None
    api_key_env: str = "OPENROUTER_API_KEY"
    api_key_secret_block: str | None = Field(None, description="Prefect Secret block name holding the key.")
    fallbacks: tuple[str, ...] = ()
    max_items: int = Field(20, ge=0)
    budget_usd: float = Field(0.50, ge=0)
    timeout_s: float = Field(30.0, gt=0)
    max_concurrency: int = Field(4, ge=1)
    retries: int = Field(3, ge=0)
    prices: dict[str, ModelPrice] = Field(default_factory=dict)
    cache_dir: str | None = Field(None, description="Disk cache; None: <out>/../llm-cache.")
    excerpt_chars: int = Field(2000, ge=100)
    max_output_tokens: int = Field(
        300, ge=32, description="Answer cap sent as max_tokens; also the output side of each request's cost estimate."
    )
    image_token_estimate: int = Field(
        1600, ge=1, description="Input tokens one image is assumed to cost when checking the budget before a request."
    )
    backoff_s: float = Field(1.0, ge=0, description="First retry delay on 429/5xx/timeouts; doubles per retry.")
    cooldown_after: int = Field(  # above one item's retry chain (retries + 1): one item's blip cools nothing
        5, ge=0, description="Failed requests in a row after which a model is skipped for cooldown_s (0: never)."
    )
    cooldown_s: float = Field(60.0, ge=0, description="How long a model that keeps failing is skipped.")
