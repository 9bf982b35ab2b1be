"""``helios serve``: MLflow's own model server, ``mlflow models serve``, on a model Helios registered.

It only fills in what Helios knows: the store (``helios-work/mlflow.db`` under the current directory unless
``--tracking-uri``), the champion alias, and ``--env-manager local`` — the served model imports Helios, which is
installed here and is not on PyPI for MLflow to install into an environment of its own.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from helios.errors import UsageError

_ALIASED = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")


def model_uri(model: str) -> str:
    """A model URI as given (``models:/NAME@ALIAS``, ``runs:/...``, a path), or a registered name -> its champion."""
    return model if (":" in model or "/" in model) else f"models:/{model}@champion"


def check_registered(uri: str, tracking_uri: str) -> None:
    """Fail in a second, with the fix, when ``models:/NAME@ALIAS`` names nothing in the store."""
    match = _ALIASED.match(uri)
    if match is None:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri).get_model_version_by_alias(match["name"], match["alias"])
    except MlflowException as exc:
        reason = str(exc).splitlines()[0][:200]
        raise UsageError(f"{uri} is not in the MLflow store {tracking_uri} ({reason}): run `helios run --model "
                         f"{match['name']}` or `helios optimize` first, or pass the store's --tracking-uri") from exc


def default_workers() -> int:
    """One uvicorn worker per usable core, at most 4. The scoring server's own Python (HTTP, JSON, DataFrames) runs
    under one GIL per worker and is most of a request's time for a small model: on 2 cores, 2 workers served
    batches of 32 digits 1.2-1.4x faster than one (benchmarks/bench_serve.py). Each worker loads its own copy."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


def serve_command(model: str, port: int, host: str, workers: int, tracking_uri: str) -> tuple[list[str], dict]:
    """The ``mlflow models serve`` command line and its environment (MLFLOW_TRACKING_URI set)."""
    store = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and not Path(store).is_file():
        raise UsageError(f"no MLflow store at {store}: run `helios run` or `helios optimize` here first, or pass "
                         "--tracking-uri of the store that holds the model")
    uri = model_uri(model)
    check_registered(uri, tracking_uri)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
               "-h", host, "-p", str(port), "-w", str(workers)]
    return command, {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
