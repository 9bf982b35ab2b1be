"""Helios used as a library leaves the process as it found it: Arrow's default memory pool, MLflow's global
tracking URI and active experiment, the environment, and glibc malloc's thresholds (never set outside the CLI)."""
from __future__ import annotations

import os

import pyarrow as pa
import pytest

from helios.cli.config_file import load_config


def process_state() -> dict:
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    return {"arrow_pool": pa.default_memory_pool().backend_name, "tracking_uri": mlflow.get_tracking_uri(),
            "tracking_uri_global": utils._tracking_uri, "experiment": fluent._active_experiment_id,
            "environ": dict(os.environ)}


@pytest.fixture
def user_mlflow(tmp_path):
    """The library user's own MLflow settings, put back afterwards for the other tests."""
    import mlflow
    from mlflow.tracking import fluent

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'user.db'}")
    fluent._active_experiment_id = "user-experiment"
    yield
    mlflow.set_tracking_uri(None)
    fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def test_a_tracked_pipeline_run_restores_process_wide_settings(prefect_harness, user_mlflow, tmp_path):
    from flows.pipeline import helios_pipeline
    from tasks.infer.scan import malloc_tuning_allowed

    before = process_state()
    assert before["arrow_pool"] == "mimalloc" and before["tracking_uri"].endswith("user.db")
    cfg = load_config(None, [f"out={tmp_path / 'work' / 'run'}", "demo.n=120", "optimize.variants=[fp32]",
                             "optimize.eval_samples=32", "optimize.latency_runs=5", "refine.enabled=false"])
    result = helios_pipeline(cfg)
    assert result["mlflow_run_id"] and result["tracking_uri"] != before["tracking_uri"]  # Helios used its own store
    after = process_state()
    assert after == before
    assert not malloc_tuning_allowed()  # only `helios run` (or HELIOS_MALLOC_TUNING=1) lets Helios call mallopt


def test_the_arrow_pool_is_restored_when_the_scoped_work_fails():
    from tasks.infer.scan import system_memory_pool

    before = pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError), system_memory_pool():
        assert pa.default_memory_pool().backend_name == "system"
        raise RuntimeError("the merge failed")
    assert pa.default_memory_pool().backend_name == before


def test_importing_the_pipeline_loads_no_heavy_library():
    """torch, transformers, MLflow, Great Expectations and DSPy are imported by the stages that use them: a run that
    reuses a champion, or has refine off, never pays for them (torch alone took 3.7 s of every run's start)."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "mlflow", "great_expectations", "dspy")
    code = f"import sys, flows.pipeline; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
