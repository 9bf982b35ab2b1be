"""Start Prefect's temporary server while the model loads, instead of after.

A run without ``PREFECT_API_URL`` gets a temporary Prefect server, which Prefect starts when the flow first needs
it: about 7 s on 2 cores during which nothing else happens. ``ServerWarmup.start`` launches it on a background
thread once the cheap checks have passed (a bad argument never starts a server); ``wait`` joins that thread just
before the flow runs, so Prefect finds its server up. Any failure here is left to Prefect: it starts the server
again itself, with its own error.
"""
from __future__ import annotations

import os
import threading


def prefect_environment() -> None:
    """Settings for the temporary server, set before anything starts it (the user's own values win)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect waits 20 s for its temporary server; a busy 2-core machine can need longer
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class ServerWarmup:
    """The temporary server's start on a background thread (nothing when a Prefect API URL is configured)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        prefect_environment()
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            return
        self._thread = threading.Thread(target=_start_server, name="prefect-server-warmup", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _start_server() -> None:
    try:
        from prefect.server.api.server import SubprocessASGIServer

        SubprocessASGIServer().start()
    except Exception:  # noqa: BLE001 - Prefect starts it again when the flow runs, and reports its own error then
        pass
