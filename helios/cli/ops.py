"""``helios ops``: set up a Prefect server for Helios (pools, GPU limit, result storage) and check the servers."""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

ops_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="Operate Helios on servers: work pools, GPU concurrency limit, health checks.")
out = Console()
err = Console(stderr=True)


@dataclass(frozen=True)
class Check:
    name: str
    url: str
    ok: bool
    detail: str


def check_endpoint(name: str, url: str, timeout_s: float = 5.0) -> Check:
    """GET ``url``; healthy means HTTP 2xx within ``timeout_s``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return Check(name, url, 200 <= response.status < 300, f"HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        return Check(name, url, False, f"HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(name, url, False, f"unreachable: {reason}")


def check_home() -> Check:
    """The checkout deployments run on this machine (HELIOS_HOME, else the one Helios is imported from)."""
    from flows.deployments import helios_home, home_problem

    home = helios_home()
    problem = home_problem(home)
    source = "HELIOS_HOME" if os.environ.get("HELIOS_HOME") else "HELIOS_HOME unset: the checkout Helios runs from"
    return Check("helios home", str(home), problem is None, problem or source)


def health_urls(prefect_api: str | None, mlflow: str | None, pushgateway: str | None,
                prometheus: str | None) -> dict[str, str]:
    """Each server's health endpoint, for the base URLs given (None: not checked)."""
    urls = {"prefect": prefect_api and f"{prefect_api.rstrip('/')}/health",
            "mlflow": mlflow and f"{mlflow.rstrip('/')}/health",
            "pushgateway": pushgateway and f"{pushgateway.rstrip('/')}/-/healthy",
            "prometheus": prometheus and f"{prometheus.rstrip('/')}/-/healthy"}
    return {name: url for name, url in urls.items() if url}


def _use_api_url(api_url: str | None):
    """A settings context pointing the Prefect client at ``api_url`` (no change when None)."""
    from contextlib import nullcontext

    if not api_url:
        return nullcontext()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: api_url})


@ops_app.command()
def pools(
    gpu_slots: int = typer.Option(1, "--gpu-slots", help="Slots of the 'gpu' concurrency limit: GPUs in the GPU pool."),
    results_dir: Path = typer.Option(Path("helios-work/prefect-results"), "--results-dir",
                                     help="Where flow results are persisted; the same path on every worker."),
    api_url: Optional[str] = typer.Option(None, "--api-url", help="Default: PREFECT_API_URL."),
) -> None:
    """Create the helios-cpu and helios-gpu work pools, the 'gpu' limit and the result storage (idempotent)."""
    from flows.deployments import PoolSpec, ensure_all

    try:
        spec = PoolSpec(gpu_slots=gpu_slots, results_dir=results_dir)
        with _use_api_url(api_url):
            lines = ensure_all(spec)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    for line in lines:
        out.print(line, highlight=False)


def url_option(server: str, default_note: str) -> typer.models.OptionInfo:
    """An optional ``--<server>`` URL flag of ``helios ops check``."""
    return typer.Option(None, f"--{server.lower()}", help=f"{server} URL ({default_note}).")


@ops_app.command()
def check(prefect_api: Optional[str] = url_option("Prefect", "default: PREFECT_API_URL"),
          mlflow: Optional[str] = url_option("MLflow", "default: MLFLOW_TRACKING_URI if http"),
          pushgateway: Optional[str] = url_option("Pushgateway", "e.g. http://127.0.0.1:9091"),
          prometheus: Optional[str] = url_option("Prometheus", "e.g. http://127.0.0.1:9090")) -> None:
    """Check HELIOS_HOME (what deployments run) and ping each server's health endpoint; exit code 1 if one is
    wrong or down."""
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    prefect_api = prefect_api or os.environ.get("PREFECT_API_URL")
    mlflow = mlflow or (tracking if tracking.startswith("http") else None)
    urls = health_urls(prefect_api, mlflow, pushgateway, prometheus)
    results = [check_home()] + [check_endpoint(name, url) for name, url in urls.items()]
    table = Table("server", "url", "status")
    for r in results:
        table.add_row(r.name, r.url, f"[green]ok[/] ({r.detail})" if r.ok else f"[red]down[/] ({r.detail})")
    out.print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(1)
