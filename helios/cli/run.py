"""What ``helios run`` does around the flow: fail fast on bad input, run, and print where the results are."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from rich.console import Console

from flows.config import PipelineConfig
from helios.cli.warm import prefect_environment
from helios.errors import UsageError
from helios.redact import redact_uri


def preflight(cfg: PipelineConfig, while_loading: Callable[[], None] = lambda: None) -> None:
    """Checks that take milliseconds and catch most mistakes before Prefect and the models start; then the model is
    loaded once (a bad model directory fails here), with ``while_loading`` called just before (helios/cli/warm.py)."""
    if cfg.input is not None:
        from flows.inputs import check_input

        check_input(cfg.input, cfg.infer.column)  # a directory, or a table (.parquet, .csv, .jsonl) with its column
    if cfg.labels is not None and not Path(cfg.labels).is_file():
        raise UsageError(f"labels file {cfg.labels} does not exist: pass a CSV with columns path,label to --labels")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: pass a directory for the run's results")
    while_loading()
    from flows.reuse import check_store, is_model_uri, parse_model_uri

    if is_model_uri(cfg.model.name):  # a registered version: its store is read in the flow, once tracking is known
        parse_model_uri(cfg.model.name)
        from flows.tracking import default_tracking_uri
        from helios.catalog import RunCatalog

        check_store(cfg.tracking.mlflow_uri or default_tracking_uri(RunCatalog.at(cfg.out).work_dir), cfg.model.name)
        return
    from helios.models import load_model

    load_model(cfg.model)


def user_errors() -> tuple[type[BaseException], ...]:
    """Failures that are about the model or the data, not bugs: printed as one line, exit code 1."""
    from tasks.prepare.parity import ParityError
    from tasks.session import ProviderFallback

    errors: list[type[BaseException]] = [ParityError, ProviderFallback]
    try:
        from tasks.report.validate import ValidationFailed

        errors.append(ValidationFailed)
    except ImportError:
        pass
    return tuple(errors)


def quiet_shutdown_noise() -> None:
    """The ephemeral Prefect server logs CancelledError tracebacks when it stops; they are not failures of the run."""
    for name in ("uvicorn.error", "prefect.server", "prefect._internal.concurrency"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def run_pipeline(cfg: PipelineConfig, console: Console, fail: Callable[[str, int], None],
                 server_ready: Callable[[], None] = lambda: None) -> dict:
    """Run the flow and print where its results are; ``server_ready`` waits for a warming Prefect server."""
    prefect_environment()
    quiet_shutdown_noise()
    from flows.pipeline import helios_pipeline
    from tasks.infer.scan import allow_malloc_tuning

    allow_malloc_tuning()  # this process is Helios's own: malloc may be tuned for the merge (tasks/infer/scan.py)
    server_ready()

    try:
        result = helios_pipeline(cfg)
    except UsageError as exc:
        fail(str(exc), 2)
    except user_errors() as exc:
        fail(f"{type(exc).__name__}: {exc}", 1)
    print_result(result, console)
    return result


def print_result(result: dict, console: Console) -> None:
    run_dir = Path(result["run_dir"])
    counts = result.get("counts", {})
    console.print(f"\n[bold green]Helios run complete[/]: {counts.get('files', 0)} files "
                  f"({counts.get('ok', 0)} ok, {counts.get('error', 0)} errors)")
    if result.get("reused"):
        reused = result["reused"]
        console.print(f"  model:       reused {reused['registered_model']} version {reused['version']} "
                      f"({reused['via']}; variant {reused['variant']}); prepare and optimize skipped")
    for stage, value in (result.get("accuracy") or {}).items():
        console.print(f"  accuracy after {stage}: {value:.2%}")
    console.print(f"  results:     {run_dir}/predictions.parquet, {run_dir}/report.json")
    if (run_dir / "report.html").exists():
        console.print(f"  report:      {run_dir}/report.html")
    if result.get("tracking_uri"):
        from flows.experiment import runs_page_url

        runs_page = runs_page_url(result["tracking_uri"], result["mlflow_run_id"]) or "http://127.0.0.1:5000"
        console.print(f"  MLflow UI:   mlflow ui --backend-store-uri {redact_uri(result['tracking_uri'])}  (then {runs_page})")
    console.print("  Prefect UI:  prefect server start  (then http://127.0.0.1:4200; this run is in the local Prefect database)")
