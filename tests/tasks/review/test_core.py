"""The review core through the real DSPy and LiteLLM stack against the fake provider on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from review_support import COST_PER_REQUEST, LABELS, PRICES, png_bytes

from helios.errors import UsageError
from tasks.review.core import ReviewItem, review_items


def _user_text(body: dict) -> str:
    parts = []
    for message in body["messages"]:
        content = message["content"]
        if message["role"] == "user":
            parts.extend([content] if isinstance(content, str) else [p.get("text", "") for p in content])
    return "\n".join(parts)


def test_reviews_text_and_accounts_cost_per_model(fake, make_cfg, text_items, tmp_path):
    items = text_items("a cat sat", "SAY:dog woof", "meow", "SAY:bird tweet")
    outcome = review_items(make_cfg(max_concurrency=2), items, LABELS, "text", "sk-test", tmp_path / "cache")

    rows = {r.path: r for r in outcome.rows}
    assert [rows[i.path].status for i in items] == ["reviewed"] * 4
    assert (rows["doc01.txt"].verdict, rows["doc01.txt"].llm_label) == ("disagree", "dog")
    assert (rows["doc00.txt"].verdict, rows["doc00.txt"].llm_label) == ("agree", "cat")
    assert all(r.model == "openai/fake-a" and r.cost_usd == pytest.approx(COST_PER_REQUEST) for r in outcome.rows)
    s = outcome.summary
    assert (s["status"], s["reviewed"], s["unreviewed"], s["skipped"]) == ("done", 4, 0, 0)
    assert s["agreement_rate"] == 0.5 and s["verdicts"] == {"agree": 2, "disagree": 2, "unsure": 0}
    assert s["cost_usd"] == pytest.approx(4 * COST_PER_REQUEST)  # 4 × (1000 × $3 + 100 × $15) / 1e6 = $0.018
    a = s["per_model"]["openai/fake-a"]
    assert (a["requests"], a["input_tokens"], a["output_tokens"], a["price_source"]) == (4, 4000, 400, "config")
    assert a["cost_usd"] == pytest.approx(0.018)
    assert s["per_model"]["openai/fake-b"]["requests"] == 0
    assert fake.requests == {"fake-a": 4}


def test_text_is_a_bounded_excerpt(fake, make_cfg, text_items, tmp_path):
    (item,) = text_items("é" * 5000)
    review_items(make_cfg(excerpt_chars=300), [item], LABELS, "text", "sk-test", tmp_path / "cache")
    assert _user_text(fake.bodies[0]).count("é") == 300


def test_images_go_as_images(fake, make_cfg, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(png_bytes())
    item = ReviewItem("digit.png", path, "cat", 0.2)
    outcome = review_items(make_cfg(), [item], LABELS, "image", "sk-test", tmp_path / "c")
    assert outcome.rows[0].status == "reviewed"
    parts = [p for m in fake.bodies[0]["messages"] if isinstance(m["content"], list) for p in m["content"]]
    assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/png;base64,") for p in parts)


def test_unreadable_items_are_unreviewed_unbilled(fake, make_cfg, tmp_path):
    garbage = tmp_path / "x.png"
    garbage.write_bytes(b"not a png at all")
    items = [ReviewItem("x.png", garbage, "cat", 0.1), ReviewItem("gone.png", tmp_path / "gone.png", "cat", 0.2)]
    outcome = review_items(make_cfg(), items, LABELS, "image", "sk-test", tmp_path / "c")
    assert [(r.status, r.reason) for r in outcome.rows] == [
        ("unreviewed", "not a decodable image"), ("unreviewed", "cannot read the file (FileNotFoundError)")]
    assert sum(fake.requests.values()) == 0 and outcome.summary["cost_usd"] == 0


def test_transient_errors_are_retried(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", 429, 500, "bad-body")
    outcome = review_items(make_cfg(retries=3), text_items("x"), LABELS, "text", "sk-test", tmp_path / "c")
    assert (outcome.rows[0].status, outcome.rows[0].model) == ("reviewed", "openai/fake-a")
    assert fake.requests == {"fake-a": 4}
    a = outcome.summary["per_model"]["openai/fake-a"]
    assert (a["requests"], a["errors"]) == (4, 3)
    assert outcome.summary["cost_usd"] == pytest.approx(COST_PER_REQUEST)  # failed requests report no usage


def test_fallback_after_retries_then_timeout(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", 429, 503, 500, "timeout", "timeout")  # item 1: 3 errors; item 2: 2 timeouts and a 500
    fake.script("fake-a", 500)
    cfg = make_cfg(retries=2, timeout_s=0.3, cooldown_after=0)  # six failures in a row: no cooldown here
    outcome = review_items(cfg, text_items("one", "two"), LABELS, "text", "sk-test", tmp_path / "c")
    assert [(r.status, r.model) for r in outcome.rows] == [("reviewed", "openai/fake-b"), ("reviewed", "openai/fake-b")]
    assert fake.requests == {"fake-a": 6, "fake-b": 2}
    assert outcome.summary["cost_usd"] == pytest.approx(2 * COST_PER_REQUEST)


def test_non_transient_error_falls_back_at_once(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", 401)
    outcome = review_items(make_cfg(), text_items("x"), LABELS, "text", "sk-test", tmp_path / "c")
    assert outcome.rows[0].model == "openai/fake-b" and fake.requests == {"fake-a": 1, "fake-b": 1}


def test_all_models_failing_leaves_the_item_unreviewed(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", 500, 500)
    fake.script("fake-b", 500, 500)
    outcome = review_items(make_cfg(retries=1), text_items("x"), LABELS, "text", "sk-test", tmp_path / "c")
    assert outcome.rows[0].status == "unreviewed"
    assert outcome.rows[0].reason == "all models failed; last: openai/fake-b: LMServerError (HTTP 500)"


def test_malformed_answer_is_retried_once(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", "malformed", "ok", "malformed", "malformed")
    outcome = review_items(make_cfg(), text_items("x", "y"), LABELS, "text", "sk-test", tmp_path / "c")
    first, second = outcome.rows
    assert first.status == "reviewed" and first.cost_usd == pytest.approx(2 * COST_PER_REQUEST)  # both were billed
    assert second.status == "unreviewed" and second.reason.startswith("bad answer twice")
    assert fake.requests == {"fake-a": 4}  # a bad answer is not a reason to try the fallback
    assert outcome.summary["malformed"] == 3 and outcome.summary["unreviewed"] == 1


def test_labels_outside_the_set_are_rejected_and_counted(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", "bad-label", "ok", "bad-label", "bad-label")
    items = text_items("SAY:dog", "z")
    outcome = review_items(make_cfg(), items, LABELS, "text", "sk-test", tmp_path / "c")
    assert [(r.status, r.llm_label) for r in outcome.rows] == [("reviewed", "dog"), ("unreviewed", None)]
    assert outcome.summary["rejected_labels"] == 3
    assert "passwd" not in json.dumps(outcome.summary) + repr(outcome.rows)
    # A rejected answer is not cached: the next run asks again.
    again = review_items(make_cfg(), items[1:], LABELS, "text", "sk-test", tmp_path / "c")
    assert again.rows[0].status == "reviewed" and fake.requests["fake-a"] == 5


@pytest.mark.parametrize("concurrency", [1, 4])
def test_budget_stops_cleanly(fake, make_cfg, text_items, tmp_path, concurrency):
    budget = 3.5 * COST_PER_REQUEST + 0.0003
    cfg = make_cfg(budget_usd=budget, max_concurrency=concurrency, max_output_tokens=100)
    items = text_items(*[f"doc {i}" for i in range(8)])
    outcome = review_items(cfg, items, LABELS, "text", "sk-test", tmp_path / "c")
    s = outcome.summary
    assert s["stopped_by_budget"] and s["cost_usd"] <= budget
    assert 1 <= s["reviewed"] < 8 and s["reviewed"] + s["skipped"] == 8
    assert sum(fake.requests.values()) == s["reviewed"]
    assert s["cost_usd"] == pytest.approx(s["reviewed"] * COST_PER_REQUEST)
    statuses = [r.status for r in outcome.rows]
    assert statuses == sorted(statuses)  # lowest confidence first: "reviewed" rows precede "skipped" ones
    assert all(r.reason.startswith("budget exhausted") for r in outcome.rows if r.status == "skipped")


def test_budget_overrun_is_at_most_one_request(fake, make_cfg, text_items, tmp_path):
    fake.prompt_tokens = 200_000  # the provider bills far beyond the estimate
    items = text_items("a", "b", "c")
    outcome = review_items(make_cfg(budget_usd=0.05), items, LABELS, "text", "sk-test", tmp_path / "c")
    one_request = 200_000 * 3.0 / 1e6 + 100 * 15.0 / 1e6
    assert outcome.summary["reviewed"] == 1 and outcome.summary["skipped"] == 2
    assert outcome.summary["cost_usd"] == pytest.approx(one_request) and one_request > 0.05


def test_cache_hit_is_never_billed_again_across_processes(fake, make_cfg, text_items, tmp_path):
    cfg = make_cfg()
    items = text_items("SAY:dog", "plain")
    first = review_items(cfg, items, LABELS, "text", "sk-test", tmp_path / "cache")
    assert first.summary["cache_hits"] == 0 and fake.requests == {"fake-a": 2}
    script = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        from tasks.review.config import ReviewConfig
        from tasks.review.core import ReviewItem, review_items

        cfg = ReviewConfig.model_validate_json(sys.argv[1])
        items = [ReviewItem(i["path"], Path(i["abs_path"]), i["label"], i["confidence"])
                 for i in json.loads(sys.argv[2])]
        out = review_items(cfg, items, ("cat", "dog", "bird"), "text", "sk-test", Path(sys.argv[3]))
        print(json.dumps({"summary": out.summary, "labels": [r.llm_label for r in out.rows]}))
    """)
    payload = json.dumps([{"path": i.path, "abs_path": str(i.abs_path), "label": i.label, "confidence": i.confidence}
                          for i in items])
    done = subprocess.run([sys.executable, "-c", script, cfg.model_dump_json(), payload, str(tmp_path / "cache")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[3], timeout=120, check=True)
    second = json.loads(done.stdout.splitlines()[-1])
    assert fake.requests == {"fake-a": 2}  # nothing sent
    assert second["summary"]["cache_hits"] == 2 and second["summary"]["cost_usd"] == 0
    assert second["summary"]["reviewed"] == 2 and second["labels"] == ["dog", "cat"]


def test_cached_answer_of_a_fallback_is_reused(fake, make_cfg, text_items, tmp_path):
    fake.script("fake-a", 500)
    items = text_items("x")
    review_items(make_cfg(retries=0), items, LABELS, "text", "sk-test", tmp_path / "c")
    again = review_items(make_cfg(retries=0), items, LABELS, "text", "sk-test", tmp_path / "c")
    assert again.rows[0].model == "openai/fake-b" and again.summary["cache_hits"] == 1
    assert fake.requests == {"fake-a": 1, "fake-b": 1}


def test_price_from_litellm_cost_map_and_config_override(fake, make_cfg, text_items, tmp_path):
    cfg = make_cfg(model="openai/gpt-4o-mini", fallbacks=(), prices={})
    outcome = review_items(cfg, text_items("x"), LABELS, "text", "sk-test", tmp_path / "c")
    entry = outcome.summary["per_model"]["openai/gpt-4o-mini"]
    assert entry["price_source"] == "litellm"
    assert entry["cost_usd"] == pytest.approx(1000 * 0.15 / 1e6 + 100 * 0.60 / 1e6)  # LiteLLM's gpt-4o-mini prices
    override = make_cfg(model="openai/gpt-4o-mini", fallbacks=(), prices={"openai/gpt-4o-mini": PRICES})
    outcome = review_items(override, text_items("y"), LABELS, "text", "sk-test", tmp_path / "c2")
    assert outcome.summary["per_model"]["openai/gpt-4o-mini"]["price_source"] == "config"
    assert outcome.summary["cost_usd"] == pytest.approx(COST_PER_REQUEST)


def test_default_model_goes_through_openrouter_route(fake, make_cfg, text_items, tmp_path):
    cfg = make_cfg(model="openrouter/anthropic/claude-3.5-sonnet", fallbacks=(), prices={})
    outcome = review_items(cfg, text_items("x"), LABELS, "text", "sk-or", tmp_path / "c")
    assert fake.requests == {"anthropic/claude-3.5-sonnet": 1}
    entry = outcome.summary["per_model"]["openrouter/anthropic/claude-3.5-sonnet"]
    assert entry["price_source"] == "builtin" and entry["cost_usd"] == pytest.approx(COST_PER_REQUEST)


def test_unpriced_model_is_refused_before_any_request(fake, make_cfg, text_items, tmp_path):
    with pytest.raises(UsageError, match="review.prices"):
        review_items(make_cfg(prices={}), text_items("x"), LABELS, "text", "sk-test", tmp_path / "c")
    assert not fake.requests


def test_without_key_the_stage_is_skipped(fake, make_cfg, text_items, tmp_path):
    outcome = review_items(make_cfg(), text_items("x", "y"), LABELS, "text", None, tmp_path / "c")
    s = outcome.summary
    assert s["status"] == "skipped: no API key in $OPENROUTER_API_KEY (set it or review.api_key_secret_block)"
    assert (s["reviewed"], s["skipped"], s["cost_usd"]) == (0, 2, 0)
    assert all(r.status == "skipped" for r in outcome.rows) and not fake.requests
    assert not (tmp_path / "c").exists()


def test_disabled_stage_is_skipped(fake, make_cfg, text_items, tmp_path):
    outcome = review_items(make_cfg(enabled=False), text_items("x"), LABELS, "text", "sk-test", tmp_path / "c")
    assert outcome.summary["status"] == "skipped: disabled by review.enabled=false" and not fake.requests


def test_dspy_global_cache_is_never_built(fake, make_cfg, text_items, tmp_path):
    import dspy

    review_items(make_cfg(), text_items("x"), LABELS, "text", "sk-test", tmp_path / "c")
    assert "cache" not in vars(dspy)  # DSPy builds its ~/.dspy_cache lazily, on first use only


def test_core_never_imports_prefect_or_mlflow():
    import ast

    package = Path(__file__).parents[3] / "tasks" / "review"
    for source in sorted(package.glob("*.py")):
        if source.name == "task.py":  # the Prefect wrapper
            continue
        imported = set()
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {"prefect", "mlflow"}, source.name


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_image_items_pass_the_size_cap_and_bomb_guard(fake, make_cfg, tmp_path):
    root = tmp_path / "input"
    (root / "sub").mkdir(parents=True)
    (root / "bomb.png").write_bytes(_bomb_png(100_000, 100_000))  # over Pillow's own limit
    (root / "big.png").write_bytes(_bomb_png(8_000, 8_000))  # under Pillow's, over the review's 50 M pixels
    with open(root / "huge.png", "wb") as handle:
        handle.truncate(21 * 2**20)  # over MAX_IMAGE_BYTES: refused after 20 MiB + 1 byte were read
    (root / "sub" / "ok.png").write_bytes(png_bytes())
    (root / "inside.png").symlink_to(root / "sub" / "ok.png")  # a link that stays in the root is followed
    names = ["bomb.png", "big.png", "huge.png", "inside.png"]
    items = [ReviewItem(n, root / n, "cat", 0.1 + i / 10) for i, n in enumerate(names)]
    outcome = review_items(make_cfg(), items, LABELS, "image", "sk-test", tmp_path / "c", root=root)
    assert [(r.status, r.reason) for r in outcome.rows] == [
        ("unreviewed", "decompression bomb: more pixels than 50000000"),
        ("unreviewed", "decompression bomb: 8000x8000 pixels exceeds 50000000"),
        ("unreviewed", "image larger than 20 MiB"), ("reviewed", None)]
    assert fake.requests == {"fake-a": 1}


def test_the_lm_layer_loads_litellms_bundled_prices_and_leaves_the_environment_alone():
    script = textwrap.dedent("""
        import os
        before = dict(os.environ)
        import tasks.review.lm
        from litellm.litellm_core_utils.get_model_cost_map import _cost_map_source_info
        print(_cost_map_source_info.source, dict(os.environ) == before)
    """)
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.stdout.split() == ["local", "True"], done.stderr[-2000:]
