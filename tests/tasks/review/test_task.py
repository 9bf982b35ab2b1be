"""The Prefect wrapper: selection, review columns, the no-key line, the Secret block, and no key anywhere on disk."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from review_support import LABELS, SECRET

from tasks.review.core import review_accuracy, review_metrics
from tasks.review.task import review_stage

NO_KEY_LINE = "LLM review skipped: no API key in $OPENROUTER_API_KEY (set it or review.api_key_secret_block)"


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """Five text files with predictions; ``SAY:`` makes the fake LLM answer that label."""
    root = tmp_path / "input"
    root.mkdir()
    contents = {"a.txt": "SAY:dog", "b.txt": "purr", "c.txt": "SAY:bird", "d.txt": "meow", "e.txt": "broken"}
    for name, text in contents.items():
        (root / name).write_text(text, encoding="utf-8")
    predictions = pd.DataFrame({
        "path": list(contents),
        "status": ["ok", "ok", "ok", "ok", "error"],
        "label": ["cat", "cat", "cat", "cat", None],
        "confidence": [0.30, 0.40, 0.20, 0.95, None],
        "final_stage": ["refine", "infer", "refine", "infer", None],
    })
    return predictions, root


def test_no_key_logs_one_line_and_skips(make_cfg, corpus, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    predictions, root = corpus
    with caplog.at_level(logging.INFO):
        out, summary = review_stage.fn(make_cfg(), predictions, str(root), LABELS, "text", str(tmp_path / "cache"))
    assert [r.getMessage() for r in caplog.records if "review" in r.getMessage()] == [NO_KEY_LINE]
    assert summary["status"] == NO_KEY_LINE.removeprefix("LLM review ")
    assert out["label"].tolist() == predictions["label"].tolist()
    assert out["review_status"].tolist() == ["skipped", "skipped", "skipped", "skipped", None]


def test_disagreements_relabel_and_accuracy(fake, make_cfg, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test")
    predictions, root = corpus
    out, summary = review_stage.fn(make_cfg(max_items=3), predictions, str(root), LABELS, "text", str(tmp_path / "c"))
    assert summary["reviewed"] == 3 and fake.requests == {"fake-a": 3}  # c, a, b: the three least confident
    rows = out.set_index("path")
    assert rows.loc["a.txt", ["label", "final_stage", "review_verdict"]].tolist() == ["dog", "review", "disagree"]
    assert rows.loc["b.txt", ["label", "final_stage", "review_verdict"]].tolist() == ["cat", "infer", "agree"]
    assert rows.loc["d.txt", "review_status"] is None  # confident: not selected
    truth = {"a.txt": "dog", "b.txt": "cat", "c.txt": "cat", "d.txt": "cat"}
    accuracy = review_accuracy(out, truth)
    assert accuracy["accuracy_after_review"] == 0.75 and accuracy["llm_accuracy_on_reviewed"] == pytest.approx(2 / 3)
    assert accuracy["model_accuracy_on_reviewed"] == pytest.approx(2 / 3)


def test_item_paths_cannot_escape_the_input_root(make_cfg, corpus, tmp_path):
    predictions, root = corpus
    escaping = predictions.assign(path=["../outside.txt", "b.txt", "c.txt", "d.txt", "e.txt"])
    with pytest.raises(ValueError, match="outside the input root"):
        review_stage.fn(make_cfg(), escaping, str(root), LABELS, "text", str(tmp_path / "c"))


def _files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_key_never_reaches_logs_report_config_or_mlflow(fake, make_cfg, corpus, tmp_path, monkeypatch, caplog, capfd):
    import mlflow

    monkeypatch.setenv("OPENROUTER_API_KEY", SECRET)
    fake.script("fake-a", 401, "malformed", "bad-label")  # failures produce reasons and error logs too
    predictions, root = corpus
    cfg = make_cfg()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with caplog.at_level(logging.DEBUG):
        out, summary = review_stage.fn(cfg, predictions, str(root), LABELS, "text", str(tmp_path / "cache"))
        (run_dir / "report.json").write_text(json.dumps({"review": summary}), encoding="utf-8")
        (run_dir / "config.json").write_text(cfg.model_dump_json(), encoding="utf-8")
        out.to_csv(run_dir / "predictions.csv", index=False)
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
        mlflow.set_experiment("review-secrets")
        with mlflow.start_run():
            mlflow.log_params({f"review.{k}": str(v) for k, v in cfg.model_dump().items()})
            mlflow.log_metrics(review_metrics(summary))
            mlflow.set_tag("review.status", summary["status"])
            mlflow.log_dict(summary, "review.json")
    assert summary["reviewed"] >= 3 and summary["rejected_labels"] == 1
    sent = [{k.lower(): v for k, v in h.items()} for h in fake.headers]  # header names are case-insensitive
    assert any(h.get("authorization") == f"Bearer {SECRET}" for h in sent)  # the key was really used
    printed = capfd.readouterr()
    assert SECRET not in caplog.text + printed.out + printed.err
    assert _files_containing(tmp_path, SECRET) == []
