"""HELIOS_LOG_FORMAT=json: one JSON object a line with run, run id, flow run id and stage; secrets never appear."""
from __future__ import annotations

import io
import json
import logging

import pytest

from flows.logs import LOGGERS, configure_logging, mask_secrets
from helios.errors import UsageError

SECRET = "sk-or-v1-0123456789abcdef"


@pytest.fixture
def restore_loggers():
    from flows import logs

    context = dict(logs._context)
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in LOGGERS}
    yield
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate, logger.level = handlers, propagate, level
    logs._context.clear()
    logs._context.update(context)


def test_the_default_stays_human_readable(monkeypatch, restore_loggers):
    monkeypatch.delenv("HELIOS_LOG_FORMAT", raising=False)
    assert configure_logging(io.StringIO(), run="r") is False


def test_an_unknown_format_names_the_valid_ones(monkeypatch):
    monkeypatch.setenv("HELIOS_LOG_FORMAT", "xml")
    with pytest.raises(UsageError, match="text, json"):
        configure_logging(io.StringIO())


def test_json_lines_carry_the_run_context_and_never_a_secret(monkeypatch, restore_loggers):
    monkeypatch.setenv("HELIOS_LOG_FORMAT", "json")
    monkeypatch.setenv("OPENROUTER_API_KEY", SECRET)
    stream = io.StringIO()
    assert configure_logging(stream, run="nightly", run_id="mlflow123", flow_run_id="flow-1")
    log = logging.getLogger("tasks.review.core")
    log.info("calling the provider with key %s at https://user:hunter22@api.example/v1?api_key=abc", SECRET)
    try:
        raise RuntimeError(f"provider said: bad key {SECRET}")
    except RuntimeError:
        log.exception("review failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["run"] == "nightly" and first["run_id"] == "mlflow123" and first["flow_run_id"] == "flow-1"
    assert first["level"] == "INFO" and first["logger"] == "tasks.review.core" and "stage" in first
    assert SECRET not in stream.getvalue() and "hunter22" not in stream.getvalue() and "abc" not in first["message"]
    assert "RuntimeError" in lines[1]["exception"]


def test_stage_comes_from_the_prefect_task(monkeypatch, restore_loggers, prefect_harness):
    from prefect import flow, task

    monkeypatch.setenv("HELIOS_LOG_FORMAT", "json")
    stream = io.StringIO()

    @task(name="refine")
    def refine_like() -> None:
        logging.getLogger("tasks.refine.core").info("adapting")

    @flow(name="log-test")
    def log_flow() -> None:
        configure_logging(stream, run="r")
        refine_like()

    log_flow()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    adapting = [line for line in lines if line["message"] == "adapting"]
    assert adapting and adapting[0]["stage"] == "refine" and adapting[0]["flow_run_id"]


def test_mask_secrets_leaves_ordinary_text_alone():
    assert mask_secrets("200 files in 3.1 s") == "200 files in 3.1 s"
