"""Fixtures of the review tests: the fake provider, small item files and a config pointing at the fake."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests have no packages (importlib mode): make helpers importable

from fake_llm import FakeLLM  # noqa: E402
from review_support import PRICES  # noqa: E402

from tasks.review.config import ReviewConfig  # noqa: E402
from tasks.review.core import ReviewItem  # noqa: E402


@pytest.fixture
def fake() -> FakeLLM:
    with FakeLLM(sleep_s=1.0) as server:
        yield server


@pytest.fixture
def make_cfg(fake: FakeLLM) -> Callable[..., ReviewConfig]:
    """A review config aimed at the fake server: models openai/fake-a then openai/fake-b, short backoff."""

    def make(**overrides: Any) -> ReviewConfig:
        settings: dict[str, Any] = {
            "model": "openai/fake-a", "fallbacks": ("openai/fake-b",), "api_base": fake.url,
            "prices": {"openai/fake-a": PRICES, "openai/fake-b": PRICES},
            "retries": 2, "backoff_s": 0.01, "timeout_s": 5.0, "max_concurrency": 1, "budget_usd": 1.0,
        }
        settings.update(overrides)
        return ReviewConfig.model_validate(settings)

    return make


@pytest.fixture
def text_items(tmp_path: Path) -> Callable[..., list[ReviewItem]]:
    """Text files; ``SAY:<label>`` in a file makes the fake LLM answer that label."""

    def make(*contents: str, label: str = "cat") -> list[ReviewItem]:
        root = tmp_path / "input"
        root.mkdir(exist_ok=True)
        items = []
        for index, content in enumerate(contents):
            path = root / f"doc{index:02d}.txt"
            path.write_text(content, encoding="utf-8")
            items.append(ReviewItem(path.name, path, label, 0.1 + index / 100))
        return items

    return make

