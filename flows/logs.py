"""Helios's logs as one JSON object a line, for log shippers: ``HELIOS_LOG_FORMAT=json`` (default ``text``: as is).

Covered: Helios's own packages (``helios``, ``flows``, ``tasks``, ``hardware``) and Prefect's run loggers (what
``get_run_logger()`` and ``log_prints`` write; they keep sending to the Prefect API too). Prefect's and other libraries'
internal logs stay as they are. Each line carries the run directory's name (``run``), the MLflow run id (``run_id``,
once the run is tracked), the Prefect flow run id and the stage (the Prefect task or sub-flow that logged it).
Secrets are masked in every line: the values of environment variables whose names say KEY, TOKEN, SECRET or
PASSWORD, API-key-shaped strings (``sk-...``) and credentials inside URIs.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import datetime, timezone

from helios.errors import UsageError
from helios.redact import MASK, redact_uri

ENV = "HELIOS_LOG_FORMAT"
FORMATS = ("text", "json")
LOGGERS = ("helios", "flows", "tasks", "hardware", "prefect.flow_runs", "prefect.task_runs")
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
_KEY_SHAPED = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}")
_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_context: dict[str, str | None] = {}


def log_format() -> str:
    """``text`` or ``json`` from $HELIOS_LOG_FORMAT; another value is a usage error naming the valid ones."""
    value = os.environ.get(ENV, "text").strip().lower() or "text"
    if value not in FORMATS:
        raise UsageError(f"{ENV}={value!r} is not a log format: use one of {', '.join(FORMATS)}")
    return value


def mask_secrets(text: str) -> str:
    """``text`` with secret environment values, key-shaped tokens and URI credentials replaced by ``***``."""
    for name, value in os.environ.items():
        if _SECRET_ENV.search(name) and len(value) >= 6 and value in text:
            text = text.replace(value, MASK)
    text = _KEY_SHAPED.sub(MASK, text)
    return _URI.sub(lambda m: redact_uri(m.group(0)), text)


def _prefect(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """(flow run id, stage) of ``record``: the Prefect flow run and the task (or sub-flow) that logged it, from the
    run context of the logging thread, else the run logger's extras and the run-wide context."""
    from prefect.context import FlowRunContext, TaskRunContext

    task, flow = TaskRunContext.get(), FlowRunContext.get()
    flow_run_id = str(flow.flow_run.id) if flow is not None and flow.flow_run is not None else None
    stage = task.task.name if task is not None else flow.flow.name if flow is not None else None
    return (flow_run_id or getattr(record, "flow_run_id", None) or _context.get("flow_run_id"),
            stage or getattr(record, "task_run_name", None))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, run, run_id, flow_run_id, stage (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "run": _context.get("run"), "run_id": _context.get("run_id"),
        }
        line["flow_run_id"], line["stage"] = _prefect(record)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(line, ensure_ascii=False, default=str))


def set_log_context(**values: str | None) -> None:
    """Add run-wide fields (``run``, ``run_id``, ``flow_run_id``) to every JSON line from now on."""
    _context.update({k: None if v is None else str(v) for k, v in values.items()})


def configure_logging(stream=None, **context: str | None) -> bool:
    """With HELIOS_LOG_FORMAT=json, send Helios's logs through a JsonFormatter on ``stream`` (stderr); True if so.
    Idempotent: a second call replaces the handler it installed."""
    set_log_context(**context)
    if log_format() != "json":
        return False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.helios_json = True
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "helios_json", False)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False  # not a second, human-readable copy on the root console
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    return True
