"""A GPU run that outlives the pipeline's wait, on a real `prefect server start` with a real process worker: the run is
cancelled (the worker stops its process) and only then is the ``gpu`` concurrency slot given back."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from servers import REPO, python_module
from test_prefect_deployments import prefect_client, start_worker

from flows.deployments import GPU_DEPLOYMENT, GPU_LIMIT, GPU_POOL

FILES = 40000  # enough digits that the GPU run is still busy when the wait ends (12,000 were done in under 8 s in CI)
TIMEOUT_S = 8


@pytest.fixture(scope="module")
def gpu_worker(deployed, prefect_server):
    """Pools, limit, result block and deployments on the session's server (``deployed``, conftest.py: made once for
    this module and the deployment tests), and one process worker on the GPU pool."""
    worker = start_worker(GPU_POOL, prefect_server, prefect_server.home / "workers-timeout")
    yield worker
    worker.stop()


def test_timed_out_gpu_run_is_cancelled_before_its_slot_is_released(gpu_worker, prefect_server, tmp_path):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    env = {**prefect_server.env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(REPO)])}
    done = subprocess.run(python_module("dispatch_driver", str(tmp_path), str(FILES), str(TIMEOUT_S)), env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    logs = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}\nworker:\n{gpu_worker.log_tail()}"
    assert done.returncode == 3, logs
    expected = f"gave no result in {TIMEOUT_S} s: cancelled by the pipeline, then its GPU slot was released"
    assert expected in done.stdout, logs
    returned_at = float(done.stdout.split("RETURNED_AT ", 1)[1].split()[0])

    with prefect_client(prefect_server.url) as client:
        deployment = client.read_deployment_by_name(GPU_DEPLOYMENT)
        [run] = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                                      sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)  # this test's run
        history = [s.type.value for s in client.read_flow_run_states(run.id)]
        assert run.state.is_cancelled(), f"{run.state}: {history}\n{logs}"
        # the worker had started its process (Pending or Running), so it went through Cancelling: the worker stopped it
        assert "PENDING" in history and history[-2:] == ["CANCELLING", "CANCELLED"], history
        assert run.state.timestamp.timestamp() <= returned_at  # Cancelled before the call (and the slot) returned
        assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots == 0
    assert not (tmp_path / "run" / "predictions.parquet").exists()  # the run never got to write its result
    assert f"Cancelled flow run '{run.name}'" in gpu_worker.log_tail(20000)
