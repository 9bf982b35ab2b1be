"""Cooldown of a failing model: through the real DSPy/LiteLLM stack against the stand-in provider, and the clock."""
from __future__ import annotations

import pytest
from review_support import COST_PER_REQUEST, LABELS

from tasks.review.cooldown import Cooldowns
from tasks.review.core import review_items, review_metrics

DEAD = [500] * 200  # the primary answers every request with HTTP 500


def test_a_dead_primary_is_cooled_down_and_the_fallback_answers(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", *DEAD)
    cfg = make_cfg(retries=2, cooldown_after=3, cooldown_s=60)
    items = text_items(*[f"doc {i}" for i in range(6)])
    outcome = review_items(cfg, items, LABELS, "text", "sk-test", tmp_path / "c")
    assert [(r.status, r.model) for r in outcome.rows] == [("reviewed", "openai/fake-b")] * 6
    # Item 1 pays the primary's three failures (its whole retry chain); the other five go straight to the fallback.
    assert fake.requests == {"fake-a": 3, "fake-b": 6}
    a, b = outcome.summary["per_model"]["openai/fake-a"], outcome.summary["per_model"]["openai/fake-b"]
    assert (a["requests"], a["errors"], a["cooldowns"], a["skipped_cooling"]) == (3, 3, 1, 5)
    assert (b["requests"], b["errors"], b["cooldowns"], b["skipped_cooling"]) == (6, 0, 0, 0)
    billed = sum(fake.billed.values()) * COST_PER_REQUEST  # a 500 carries no usage: only answers are billed
    assert outcome.summary["cost_usd"] == pytest.approx(billed) == pytest.approx(6 * COST_PER_REQUEST)
    assert review_metrics(outcome.summary)["review.openai/fake-a.cooldowns"] == 1.0


def test_without_cooldown_every_item_pays_the_dead_primary(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", *DEAD)
    cfg = make_cfg(retries=2, cooldown_after=0)
    outcome = review_items(cfg, text_items("one", "two", "three"), LABELS, "text", "sk-test", tmp_path / "c")
    assert fake.requests == {"fake-a": 9, "fake-b": 3}
    assert outcome.summary["per_model"]["openai/fake-a"]["cooldowns"] == 0


@pytest.mark.parametrize("concurrency", [1, 4])
def test_budget_holds_exactly_with_a_cooled_primary(fake, make_cfg, text_items, tmp_path, concurrency):
    fake.script("fake-a", *DEAD)
    budget = 3.5 * COST_PER_REQUEST + 0.0003
    cfg = make_cfg(retries=2, cooldown_after=3, budget_usd=budget, max_output_tokens=100, max_concurrency=concurrency)
    outcome = review_items(cfg, text_items(*[f"doc {i}" for i in range(8)]), LABELS, "text", "sk-test",
                           tmp_path / "c")
    s = outcome.summary
    assert s["stopped_by_budget"] and s["cost_usd"] <= budget
    assert s["cost_usd"] == pytest.approx(sum(fake.billed.values()) * COST_PER_REQUEST)
    assert s["cost_usd"] == pytest.approx(s["reviewed"] * COST_PER_REQUEST) and s["reviewed"] == 3
    assert s["per_model"]["openai/fake-a"]["cooldowns"] >= 1
    assert fake.requests["fake-a"] < 3 + concurrency  # only requests already in flight when it cooled down


@pytest.mark.parametrize("concurrency", [1, 3])
def test_every_model_cooling_leaves_items_unreviewed_with_the_reason(fake, make_cfg, text_items, tmp_path,
                                                                     concurrency):
    """Items that send nothing still pass their turn on: the items after them are not left waiting for it."""
    fake.script("fake-a", *DEAD)
    fake.script("fake-b", *DEAD)
    cfg = make_cfg(retries=0, cooldown_after=1, max_concurrency=concurrency)
    outcome = review_items(cfg, text_items("one", "two", "three", "four"), LABELS, "text", "sk-test",
                           tmp_path / "c")
    assert [r.status for r in outcome.rows] == ["unreviewed"] * 4
    assert fake.requests["fake-a"] <= concurrency and fake.requests["fake-b"] <= concurrency
    assert outcome.rows[-1].reason == "all models failed; last: openai/fake-b: cooling down after 1 failures in a row"
    assert outcome.summary["cost_usd"] == 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_cooled_model_is_tried_again_after_the_period_and_a_success_resets_the_run():
    clock = Clock()
    cool = Cooldowns(("m",), after=2, seconds=30, clock=clock)
    cool.record("m", failed=True)
    cool.record("m", failed=False)  # the run of failures is broken
    cool.record("m", failed=True)
    assert not cool.cooling("m")
    cool.record("m", failed=True)  # two in a row
    assert cool.cooling("m") and cool.skip("m")
    clock.now += 29.9
    assert cool.skip("m")
    clock.now += 0.2
    assert not cool.cooling("m") and not cool.skip("m")
    cool.record("m", failed=True)  # tried again: needs another full run of failures to cool down again
    assert not cool.cooling("m")
    assert cool.as_dict("m") == {"cooldowns": 1, "skipped_cooling": 2}


def test_an_item_that_sends_nothing_passes_its_turn_to_the_next(fake, make_cfg, text_items, tmp_path):
    """Item 1 finds every model cooling down; when the period is over item 2 must not wait for item 1's turn."""
    import threading

    from tasks.review import lm as lm_layer
    from tasks.review.budget import Budget
    from tasks.review.cache import AnswerCache
    from tasks.review.reviewer import Reviewer

    cfg, clock = make_cfg(retries=0), Clock()
    chain = ("openai/fake-a", "openai/fake-b")
    reviewer = Reviewer(cfg=cfg, labels=LABELS, modality="text", chain=chain,
                        lms={m: lm_layer.build_lm(m, cfg, "sk-test") for m in chain},
                        prices={m: lm_layer.resolve_price(m, cfg) for m in chain}, budget=Budget(1.0),
                        cache=AnswerCache(tmp_path / "c"))
    reviewer.cooldowns = Cooldowns(chain, after=1, seconds=10, clock=clock)
    for model in chain:
        reviewer.cooldowns.record(model, failed=True)
    first, second = [reviewer.lookup(i.abs_path, i.label) for i in text_items("one", "two")]
    assert reviewer.ask(first, 0).status == "unreviewed" and sum(fake.requests.values()) == 0
    clock.now += 11  # the cooldown is over
    answers = []
    worker = threading.Thread(target=lambda: answers.append(reviewer.ask(second, 1)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "item 2 waited for a turn that item 1 never took"
    assert answers[0].status == "reviewed" and fake.requests == {"fake-a": 1}
