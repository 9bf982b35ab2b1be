"""The review core's ``on_request`` hook (what the flow traces in MLflow), through real DSPy against the fake."""
from __future__ import annotations

import threading

import pytest
from review_support import COST_PER_REQUEST, LABELS, SECRET, png_bytes

from tasks.review.core import ReviewItem, review_items


def collect() -> tuple[list, callable]:
    seen, lock = [], threading.Lock()

    def hook(reviewed) -> None:
        with lock:
            seen.append(reviewed)

    return seen, hook


def test_each_item_sent_reports_its_requests_retries_and_fallbacks(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", 500, 500)  # the first item: a retry, then the fallback model
    items = text_items("a cat sat", "meow")
    seen, hook = collect()
    outcome = review_items(make_cfg(retries=1), items, LABELS, "text", SECRET, tmp_path / "c", hook)

    by_path = {r.item.path: r for r in seen}
    assert set(by_path) == {"doc00.txt", "doc01.txt"}
    first = by_path["doc00.txt"].result.requests
    assert [(r.model, r.kind) for r in first] == [("openai/fake-a", "transient"), ("openai/fake-a", "transient"),
                                                  ("openai/fake-b", "ok")]
    assert first[0].error == "LMServerError (HTTP 500)" and first[0].input_tokens == 0
    ok = first[-1]
    assert (ok.input_tokens, ok.output_tokens) == (1000, 100) and ok.end_ns > ok.start_ns >= first[1].end_ns
    assert ok.cost_usd == pytest.approx(COST_PER_REQUEST) == pytest.approx(ok.input_cost_usd + ok.output_cost_usd)
    assert ok.answer["label"] == "cat" and ok.answer["verdict"] == "agree"
    total = sum(r.cost_usd for item in seen for r in item.result.requests)
    assert total == pytest.approx(outcome.summary["cost_usd"])
    assert by_path["doc01.txt"].inputs["excerpt"] == "meow"
    assert SECRET not in repr(seen)


def test_cache_hits_send_nothing_and_report_nothing(fake, make_cfg, text_items, tmp_path):
    items = text_items("a cat sat")
    review_items(make_cfg(), items, LABELS, "text", "sk-test", tmp_path / "c")
    seen, hook = collect()
    outcome = review_items(make_cfg(), items, LABELS, "text", "sk-test", tmp_path / "c", hook)
    assert outcome.summary["cache_hits"] == 1 and seen == []


def test_an_image_reaches_the_hook_as_the_prompts_image(fake, make_cfg, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes())
    seen, hook = collect()
    review_items(make_cfg(), [ReviewItem("digit.png", path, "cat", 0.2)], LABELS, "image", "sk-test", tmp_path / "c",
                 hook)
    [reviewed] = seen
    assert reviewed.inputs["image"].url.startswith("data:image/png;base64,")
