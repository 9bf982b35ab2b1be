"""Review of one item: cache first, then each model in order with retries, every request budgeted and accounted."""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from helios.reader import SafeReader
from tasks.review import lm as lm_layer
from tasks.review.budget import Budget, Price
from tasks.review.cache import AnswerCache, request_key
from tasks.review.config import ReviewConfig
from tasks.review.cooldown import Cooldowns
from tasks.review.program import (
    SIGNATURES,
    VERDICTS,
    RejectedLabel,
    UnreadableItem,
    check_answer,
    prepare_item,
    prompt_size,
)

_MESSAGE_OVERHEAD_TOKENS = 16  # role markers and framing per message, generous
_MAX_RETRY_AFTER_S = 60.0


@dataclass
class ModelLedger:
    price: Price
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6), "errors": self.errors,
            "input_per_mtok": self.price.input_per_mtok, "output_per_mtok": self.price.output_per_mtok,
            "price_source": self.price.source,
        }


@dataclass(frozen=True)
class Request:
    """One request sent for an item: which model, when (epoch ns), its outcome, tokens and cost."""

    model: str
    start_ns: int
    end_ns: int
    kind: str  # lm.Attempt.kind: ok | malformed | transient | failed
    input_tokens: int
    output_tokens: int
    cost_usd: float
    input_cost_usd: float  # the two parts of cost_usd
    output_cost_usd: float
    error: str | None = None  # class and HTTP status only, as in lm.Attempt
    answer: dict[str, str] | None = None  # the parsed completion (verdict, label, rationale), when it parsed


@dataclass
class ItemResult:
    status: str  # reviewed | unreviewed | skipped
    verdict: str | None = None
    label: str | None = None
    reason: str | None = None
    model: str | None = None
    cost_usd: float = 0.0
    requests: list[Request] = field(default_factory=list)  # every request sent, retries and fallbacks included


@dataclass(frozen=True)
class Pending:
    """An item that needs a model: its inputs, cache key per model and input-token estimate."""

    inputs: dict[str, Any]
    keys: dict[str, str]
    input_estimate: int


@dataclass
class Reviewer:
    """Shared, thread-safe state of one review run: ``lookup`` each item in order, then ``ask`` concurrently."""

    cfg: ReviewConfig
    labels: tuple[str, ...]
    modality: str
    chain: tuple[str, ...]  # cfg.model, then the fallbacks, in order
    lms: dict[str, Any]
    prices: dict[str, Price]
    budget: Budget
    cache: AnswerCache
    reader: SafeReader | None = None  # reads the items' files; None: one confined to each file's directory
    ledger: dict[str, ModelLedger] = field(init=False)
    cooldowns: Cooldowns = field(init=False)
    counts: Counter[str] = field(default_factory=Counter)  # cache_hits, rejected_labels, malformed
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.signature = SIGNATURES[self.modality]
        self.adapter = lm_layer.build_adapter()
        self.ledger = {model: ModelLedger(self.prices[model]) for model in self.chain}
        self.cooldowns = Cooldowns(self.chain, self.cfg.cooldown_after, self.cfg.cooldown_s)

    def lookup(self, abs_path: Any, model_label: str) -> ItemResult | Pending:
        """Sequential first step: an unreadable item or a cache hit is final; otherwise what to ask the models."""
        try:
            item = prepare_item(abs_path, model_label, self.labels, self.modality, self.cfg.excerpt_chars,
                                self.reader)
        except UnreadableItem as exc:
            return ItemResult("unreviewed", reason=str(exc))
        keys = {model: request_key(model, item.fingerprint) for model in self.chain}
        for model in self.chain:
            hit = self.cache.get(keys[model])
            if hit and hit.get("label") in self.labels and hit.get("verdict") in VERDICTS:
                self._count("cache_hits")
                return ItemResult("reviewed", hit["verdict"], hit["label"], model=model)
        text_bytes, images = prompt_size(self.signature, self.adapter, item.inputs)
        # Bytes bound BPE tokens from above; the answer is capped by max_tokens.
        input_estimate = text_bytes + images * self.cfg.image_token_estimate + 2 * _MESSAGE_OVERHEAD_TOKENS
        return Pending(item.inputs, keys, input_estimate)

    def ask(self, pending: Pending, turn: int) -> ItemResult:
        """Concurrent second step: each model in order until one answers; ``turn`` orders first admissions."""
        spent, problem, sent = 0.0, "no model answered", []
        for model in self.chain:
            if self.cooldowns.skip(model):  # failed cooldown_after times in a row: the fallbacks answer for now
                problem = f"{model}: cooling down after {self.cfg.cooldown_after} failures in a row"
                continue
            result, cost, problem = self._ask(model, pending, turn, sent)
            turn = None  # only an item's first request waits for its turn
            spent += cost
            if result is not None:
                result.cost_usd, result.requests = spent, sent
                return result
        if turn is not None:  # every model was cooling down: no request took this item's turn, so pass it on
            self.budget.pass_turn(turn)
        return ItemResult("unreviewed", reason=f"all models failed; last: {problem}", cost_usd=spent, requests=sent)

    def _ask(self, model: str, pending: Pending, turn: int | None,
             sent: list[Request]) -> tuple[ItemResult | None, float, str]:
        """Ask one model, retrying transient errors and one bad answer.

        Returns (the item's result, or None to fall back to the next model; USD spent; what went wrong last);
        each request sent is appended to ``sent``.
        """
        price, spent, transient, bad_answers = self.prices[model], 0.0, 0, 0
        estimate = price.cost(pending.input_estimate, self.cfg.max_output_tokens)
        while True:
            admitted, turn = self.budget.reserve(estimate, turn), None
            if not admitted:
                reason = f"budget exhausted (${self.budget.spent_usd:.4f} of ${self.budget.limit_usd:.4f} spent)"
                return ItemResult("skipped", reason=reason), spent, reason
            attempt, cost = self._send(model, pending, estimate, sent)
            spent += cost
            problem = f"{model}: {attempt.error}"
            if attempt.kind == "ok":
                try:
                    answer = check_answer(attempt.prediction, self.labels)
                except RejectedLabel:
                    self._count("rejected_labels")
                    problem = f"{model}: label outside the label set"
                else:
                    record = {"model": model, **vars(answer), "input_tokens": attempt.input_tokens,
                              "output_tokens": attempt.output_tokens, "cost_usd": cost}
                    self.cache.put(pending.keys[model], record)
                    return ItemResult("reviewed", answer.verdict, answer.label, model=model), spent, ""
            if attempt.kind in ("ok", "malformed"):  # a bad answer: retried once, then the item is given up
                if attempt.kind == "malformed":
                    self._count("malformed")
                bad_answers += 1
                if bad_answers > 1:
                    result = ItemResult("unreviewed", reason=f"bad answer twice ({problem})", model=model)
                    return result, spent, problem
                continue
            if attempt.kind == "failed" or transient >= self.cfg.retries or self.cooldowns.cooling(model):
                return None, spent, problem
            time.sleep(self._delay(transient, attempt.retry_after))
            transient += 1

    def _send(self, model: str, pending: Pending, estimate: float,
              sent: list[Request]) -> tuple[lm_layer.Attempt, float]:
        """One admitted request: sent, its reservation settled, accounted and appended to ``sent``; (attempt, USD)."""
        start_ns = time.time_ns()
        try:
            attempt = lm_layer.request_review(self.lms[model], self.adapter, self.signature, pending.inputs)
            end_ns = time.time_ns()
        except BaseException:
            self.budget.settle(estimate, 0.0)  # never leave a reservation behind: others wait on it
            raise
        price = self.prices[model]
        cost = price.cost(attempt.input_tokens, attempt.output_tokens)
        self.budget.settle(estimate, cost)
        self._account(model, attempt, cost)
        self.cooldowns.record(model, failed=attempt.kind in ("transient", "failed"))
        answer = None if attempt.prediction is None else {
            key: str(getattr(attempt.prediction, key, "")) for key in ("verdict", "label", "rationale")}
        sent.append(Request(model, start_ns, end_ns, attempt.kind, attempt.input_tokens,
                            attempt.output_tokens, cost, price.cost(attempt.input_tokens, 0),
                            price.cost(0, attempt.output_tokens), attempt.error, answer))
        return attempt, cost

    def _delay(self, retry: int, hint: float | None) -> float:
        if isinstance(hint, (int, float)) and hint >= 0:
            return min(float(hint), _MAX_RETRY_AFTER_S)
        return self.cfg.backoff_s * 2**retry

    def _account(self, model: str, attempt: lm_layer.Attempt, cost: float) -> None:
        with self._lock:
            entry = self.ledger[model]
            entry.requests += 1
            entry.input_tokens += attempt.input_tokens
            entry.output_tokens += attempt.output_tokens
            entry.cost_usd += cost
            entry.errors += attempt.kind in ("transient", "failed")

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1
