"""Prices and the spending budget of the LLM review: admission before each request, settlement after."""
from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens of one model, and where that figure came from."""

    input_per_mtok: float
    output_per_mtok: float
    source: str  # "config" (review.prices), "litellm" (LiteLLM's cost map) or "builtin"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a request that used these tokens."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


class Budget:
    """A USD limit shared by concurrent requests.

    Each request reserves its worst-case cost before it is sent and settles its actual cost when it returns, so
    requests in flight can never jointly overrun the limit while their estimates hold. A request that does not fit
    waits for those in flight to settle (their actual cost is usually below the estimate); if it still does not fit
    with nothing in flight, the budget is exhausted for good and every later reservation is refused, so the stage
    stops cleanly instead of cherry-picking cheaper items further down the list.
    """

    def __init__(self, limit_usd: float):
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self.exhausted = False
        self._reserved = 0.0
        self._in_flight = 0
        self._turn = 0
        self._cond = threading.Condition()

    def reserve(self, estimate_usd: float, turn: int | None = None) -> bool:
        """Admit a request whose cost is at most ``estimate_usd``; False once the budget is exhausted.

        ``turn`` (0, 1, 2 ... one per item, in priority order) makes items' first requests pass in that order,
        whatever the thread scheduling: the budget goes to the least confident items, not the fastest threads.
        """
        with self._cond:
            while turn is not None and turn != self._turn:
                self._cond.wait()
            try:
                while not self.exhausted:
                    if self.spent_usd + self._reserved + estimate_usd <= self.limit_usd:
                        self._reserved += estimate_usd
                        self._in_flight += 1
                        return True
                    if self._in_flight == 0:
                        self.exhausted = True
                        break
                    self._cond.wait()
                return False
            finally:
                if turn is not None:
                    self._turn += 1
                    self._cond.notify_all()

    def pass_turn(self, turn: int) -> None:
        """Give up turn ``turn`` without a request (the item sends none): the items after it may then go."""
        with self._cond:
            while turn != self._turn:
                self._cond.wait()
            self._turn += 1
            self._cond.notify_all()

    def settle(self, estimate_usd: float, actual_usd: float) -> None:
        """Replace a reservation by what the request actually cost (0 for a request that failed unbilled)."""
        with self._cond:
            self._reserved -= estimate_usd
            self._in_flight -= 1
            self.spent_usd += actual_usd
            self._cond.notify_all()
