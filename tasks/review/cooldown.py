"""Cooldown of review models that keep failing, as LiteLLM's router cools down a failing deployment.

After ``review.cooldown_after`` failed requests in a row (transient errors and refusals alike; a bad answer is not a
failure of the provider) a model is skipped for ``review.cooldown_s`` seconds and the fallbacks answer, so a dead
primary costs a few round trips for the whole run instead of its full retry chain on every item. When the period is
over the model is tried again; another ``cooldown_after`` failures in a row cool it down again. Shared by the
review's worker threads.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class ModelHealth:
    """One model's run of failures and what the cooldown did to it."""

    consecutive_failures: int = 0
    cooling_until: float = 0.0  # on the clock of ``Cooldowns``
    cooldowns: int = 0  # times it was cooled down
    skipped: int = 0  # times an item went past it because it was cooling down


class Cooldowns:
    """Per-model failure runs and cooldown periods; ``after=0`` turns cooling off."""

    def __init__(self, models: tuple[str, ...], after: int, seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.after = after
        self.seconds = seconds
        self.health = {model: ModelHealth() for model in models}
        self._clock = clock
        self._lock = threading.Lock()

    def cooling(self, model: str) -> bool:
        """Whether ``model`` is in its cooldown period now."""
        with self._lock:
            return self.health[model].cooling_until > self._clock()

    def skip(self, model: str) -> bool:
        """True (and counted) when an item must go past ``model`` because it is cooling down."""
        with self._lock:
            health = self.health[model]
            if health.cooling_until <= self._clock():
                return False
            health.skipped += 1
            return True

    def record(self, model: str, failed: bool) -> None:
        """Count one request's outcome; the ``after``-th failure in a row starts a cooldown period."""
        with self._lock:
            health = self.health[model]
            if not failed:
                health.consecutive_failures = 0
                return
            health.consecutive_failures += 1
            if self.after and health.consecutive_failures >= self.after:
                health.consecutive_failures = 0
                health.cooling_until = self._clock() + self.seconds
                health.cooldowns += 1

    def as_dict(self, model: str) -> dict[str, int]:
        health = self.health[model]
        return {"cooldowns": health.cooldowns, "skipped_cooling": health.skipped}
