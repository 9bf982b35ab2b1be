"""Compare Helios runs tracked in MLflow: the table users build in the MLflow UI, on the command line.

The flow logs each run under the tag and metric names of ``flows.tags``; ``compare_runs`` reads them back.
mlflow is imported inside ``compare_runs`` only (importing it costs over a second).

A run is marked ``regressed`` when, against the previous finished run of the same deployment, its accuracy fell by
more than ``MAX_REGRESSION`` points or its files/s by more than ``MAX_SLOWDOWN``. Runs of one deployment write to the
same run directory, so they share the MLflow run name ``<model>-<run dir>``. Throughput is compared only between
runs that inferred every file (a run that reused earlier results has a files/s that says nothing about speed).
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table

from flows.lineage import CONTEXT_INPUT, CONTEXT_TAG
from flows.tags import (METRIC_ACCURACY, METRIC_COMPUTE_COST, METRIC_COST_PER_1K, METRIC_LLM_COST, METRIC_THROUGHPUT,
                        TAG_HARDWARE_CLASS, TAG_MODEL, TAG_PARENT_RUN, TAG_RUN_NAME, TAG_VARIANT)
from helios.errors import UsageError
from helios.redact import redact_uri

COLUMNS = ("run_id", "start", "model", "variant", "hardware_class", "input_digest", "throughput", "accuracy", "llm_cost_usd",
           "compute_cost_usd", "cost_per_1k_files_usd", "status", "regressed")
MAX_REGRESSION = 0.5  # accuracy points, as optimize.max_regression's default
MAX_SLOWDOWN = 0.10  # share of files/s: end-to-end throughput on a shared machine varies by a few per cent
METRIC_REUSED = "files.reused"  # files whose result an earlier run had (flows.tracking logs the counts as files.*)
LOOKBACK = 20  # runs read beyond --last to find the previous run of the oldest ones shown


def _row(run) -> dict:
    tags, metrics = run.data.tags, run.data.metrics
    return {
        "run_id": run.info.run_id,
        "start": pd.Timestamp(datetime.fromtimestamp(run.info.start_time / 1000, tz=timezone.utc)),
        "model": tags.get(TAG_MODEL),
        "variant": tags.get(TAG_VARIANT),
        "hardware_class": tags.get(TAG_HARDWARE_CLASS),
        "input_digest": input_digest(run),
        "throughput": metrics.get(METRIC_THROUGHPUT),
        "accuracy": metrics.get(METRIC_ACCURACY),
        "llm_cost_usd": metrics.get(METRIC_LLM_COST),
        "compute_cost_usd": metrics.get(METRIC_COMPUTE_COST),
        "cost_per_1k_files_usd": metrics.get(METRIC_COST_PER_1K),
        "status": run.info.status,
    }


def regression(run, previous) -> str | None:
    """What regressed in ``run`` against ``previous`` (the same deployment's previous finished run), or None."""
    if previous is None or run.info.status != "FINISHED":
        return None
    now, before, found = run.data.metrics, previous.data.metrics, []
    acc, prev_acc = now.get(METRIC_ACCURACY), before.get(METRIC_ACCURACY)
    if acc is not None and prev_acc is not None and (prev_acc - acc) * 100 > MAX_REGRESSION:
        found.append(f"accuracy {(acc - prev_acc) * 100:+.2f} pt")
    speed, prev_speed = now.get(METRIC_THROUGHPUT), before.get(METRIC_THROUGHPUT)
    inferred_all = not now.get(METRIC_REUSED) and not before.get(METRIC_REUSED)
    if speed is not None and prev_speed and inferred_all and speed < prev_speed * (1 - MAX_SLOWDOWN):
        found.append(f"files/s {speed / prev_speed - 1:+.0%}")
    return "; ".join(found) or None


def mark_regressions(runs: list) -> list[str | None]:
    """``regression`` of each run (newest first) against the next older finished run with the same run name."""
    marks = []
    for i, run in enumerate(runs):
        name = run.data.tags.get(TAG_RUN_NAME) or run.info.run_name
        previous = next((r for r in runs[i + 1:] if r.info.status == "FINISHED"
                         and (r.data.tags.get(TAG_RUN_NAME) or r.info.run_name) == name), None)
        marks.append(regression(run, previous))
    return marks


def input_digest(run) -> str | None:
    """The digest of the files the run scanned (its ``inference`` dataset input), shortened to 8 characters:
    equal for runs over the same unchanged input."""
    for dataset_input in run.inputs.dataset_inputs if run.inputs else ():
        if any(t.key == CONTEXT_TAG and t.value == CONTEXT_INPUT for t in dataset_input.tags):
            return dataset_input.dataset.digest[:8]
    return None


def _top_level_runs(client, experiment_id: str, last: int) -> list:
    """The newest ``last`` pipeline runs; the per-variant runs nested under each are left out."""
    runs, token = [], None
    while len(runs) < last:
        page = client.search_runs([experiment_id], max_results=max(4 * last, 100),
                                  order_by=["attributes.start_time DESC"], page_token=token)
        runs += [r for r in page if TAG_PARENT_RUN not in r.data.tags]
        token = page.token
        if not token:
            break
    return runs[:last]


def compare_runs(tracking_uri: str, experiment: str = "helios", last: int = 10) -> pd.DataFrame:
    """The ``last`` runs of ``experiment``, newest first, one row each with the COLUMNS above (``regressed``: see
    the module docstring)."""
    if last < 1:
        raise UsageError(f"--last {last} must be at least 1")
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store there; say where we looked instead.
        raise UsageError(f"no MLflow store at {redact_uri(tracking_uri)}: run `helios run` first or pass --tracking-uri")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            known = ", ".join(names) if names else "none yet"
            raise UsageError(f"no MLflow experiment {experiment!r} at {redact_uri(tracking_uri)}: pass --experiment with one of: {known}")
        runs = _top_level_runs(client, found.experiment_id, last + LOOKBACK)
    except MlflowException as exc:
        raise UsageError(f"cannot read MLflow runs at {redact_uri(tracking_uri)}: {redact_uri(exc.message)}") from exc
    marks = mark_regressions(runs)
    frame = pd.DataFrame([{**_row(r), "regressed": m} for r, m in zip(runs[:last], marks)], columns=list(COLUMNS))
    frame.attrs["experiment"] = experiment
    return frame


def _fmt(value, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


def _text(value) -> str:
    return "–" if value is None or (isinstance(value, float) and pd.isna(value)) else escape(str(value))


NUMERIC = ("files/s", "acc", "LLM $", "compute $", "$/1k files")
STATUS_STYLES = {"FINISHED": "green", "FAILED": "red", "RUNNING": "yellow", "KILLED": "red"}


def render_comparison(df: pd.DataFrame) -> Table:
    """A rich table of ``compare_runs``'s frame (print it with ``rich.console.Console().print``)."""
    title = f"Helios runs — experiment {df.attrs['experiment']}" if "experiment" in df.attrs else "Helios runs"
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    # Ids, times, numbers and status never wrap; names fold onto more lines when the terminal is narrow.
    for name, width in (("run", 8), ("start UTC", 11), ("model", 0), ("variant", 0), ("hardware", 0), ("input", 8),
                        ("files/s", 7), ("acc", 5), ("LLM $", 6), ("compute $", 9), ("$/1k files", 10), ("status", 8),
                        ("regressed vs previous", 0)):
        table.add_column(name, justify="right" if name in NUMERIC else "left",
                         no_wrap=bool(width), min_width=width or None, overflow="ellipsis" if width else "fold")
    for row in df.itertuples(index=False):
        style = STATUS_STYLES.get(str(row.status), "")
        table.add_row(
            str(row.run_id)[:8], row.start.strftime("%m-%d %H:%M") if pd.notna(row.start) else "–",
            _text(row.model), _text(row.variant), _text(row.hardware_class), _text(row.input_digest),
            _fmt(row.throughput, ",.1f"), _fmt(row.accuracy, ".3f"), _fmt(row.llm_cost_usd, ".4f"),
            _fmt(row.compute_cost_usd, ".4f"), _fmt(row.cost_per_1k_files_usd, ".4f"),
            f"[{style}]{row.status}[/]" if style else str(row.status),
            f"[red]{escape(row.regressed)}[/]" if isinstance(row.regressed, str) else "–",
        )
    if not len(df):
        table.caption = "no runs yet"
    return table
