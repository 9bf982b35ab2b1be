"""Real servers on 127.0.0.1 for the integration tests: free ports, bounded startup waits, clean shutdown by pid."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 60.0  # every server's startup wait; a slow shared CI machine needs ~30 s for Prefect and MLflow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment minus the user's Prefect and MLflow settings, with a Prefect home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({
        "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # litellm (via dspy) fetches a price list at import; offline, its retry thread can deadlock mlflow's import hooks
        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def binary(name: str) -> str:
    """Path of a system binary, or skip the test saying which Debian package provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: apt-get install -y {name} (.ci/run installs it)")
    return path


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class Server:
    """A server subprocess with its output in a log file; stopped by its own pid, never by name."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, cwd: Path = REPO):
        self.name, self.log = name, log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def wait_until_healthy(self, url: str, timeout_s: float = STARTUP_S) -> None:
        """Poll ``url`` until HTTP 200; fail with the log tail if the process dies or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} before {url} answered:\n{self.log_tail()}")
            try:
                if http_get(url, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"{self.name} did not answer {url} within {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args``: the console scripts of this venv without relying on PATH."""
    return [sys.executable, "-m", module, *args]


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run a CLI to completion in the checkout; its stdout, or fail the test with both streams' tails."""
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args[2:])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout
