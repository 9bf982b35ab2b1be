"""Shared fixtures: one Prefect test harness per session (starting it costs seconds)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def minilm_export(tmp_path_factory):
    """The packaged MiniLM exported to ONNX once per session (the export takes about 10 s), shared read-only by the
    infer stage's tests (tests/tasks/infer) and the infer subflow's table tests (tests/flows/test_infer_tables.py)."""
    from helios.models import ModelConfig, load_model
    from tasks.prepare.export import export_onnx

    return export_onnx(load_model(ModelConfig(name="minilm")), tmp_path_factory.mktemp("minilm-onnx"), 17)
