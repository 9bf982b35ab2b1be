"""The Prefect wrapper: selection, review columns, the no-key line, the Secret block, and no key anywhere on disk."""
from __future__ import annotations

import json
import logging
import os
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


def test_files_the_scan_refuses_become_item_errors(fake, make_cfg, corpus, tmp_path, monkeypatch):
    """A path out of the root, a symlink out of it and a FIFO: each its item's error; the run and the rest go on."""
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test")
    predictions, root = corpus
    (tmp_path / "outside.txt").write_text("SAY:dog TOP-SECRET", encoding="utf-8")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    os.mkfifo(root / "pipe.txt")  # opening it for reading without O_NONBLOCK would hang the run
    frame = pd.DataFrame({"path": ["../outside.txt", "link.txt", "pipe.txt", "b.txt"], "status": ["ok"] * 4,
                          "label": ["cat"] * 4, "confidence": [0.1, 0.2, 0.3, 0.4], "final_stage": ["infer"] * 4})
    out, summary = review_stage.fn(make_cfg(), frame, str(root), LABELS, "text", str(tmp_path / "c"))
    rows = out.set_index("path")
    assert rows["review_status"].tolist() == ["unreviewed", "unreviewed", "unreviewed", "reviewed"]
    assert rows.loc["../outside.txt", "review_reason"].startswith("path leaves the input root")
    assert rows.loc["link.txt", "review_reason"].startswith("symlink leaves the input root (points to ")
    assert rows.loc["pipe.txt", "review_reason"] == "not a regular file (FIFO (named pipe)): not opened"
    assert fake.requests == {"fake-a": 1} and not any("TOP-SECRET" in json.dumps(b) for b in fake.bodies)
    assert summary["reviewed"] == 1 and summary["unreviewed"] == 3


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
