"""Dispatching the infer stage: locally as a subflow, and the GPU path's parameters, setup errors and results.

The GPU path against a real server, deployment and process worker is in tests/integration.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.states import Completed, Failed, Running

from flows.dispatch import (GpuStageError, build_parameters, gpu_parameters, gpu_result_of, nested_without_heartbeats,
                            run_infer_stage, variant_for_pool)
from flows.gpu_stages import GpuStagesResult, ModelBuild
from helios.models.config import ModelConfig
from helios.errors import UsageError
from flows.deployments import GPU_LIMIT
from tasks.infer.config import InferConfig
from tasks.infer.model_ref import ModelRef
from tasks.infer.result import InferResult
from tasks.infer.scan import scan_input


@pytest.fixture
def manifest(tmp_path) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for i in range(20):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(buf, format="PNG")
        (tmp_path / "in" / f"{i:03d}.png").write_bytes(buf.getvalue())
    return str(scan_input(str(tmp_path / "in"), tmp_path / "run").manifest_path)


def flow_run(state) -> FlowRun:
    return FlowRun(flow_id=uuid4(), name="brave-gpu", state=state)


def test_local_pool_runs_the_infer_subflow_in_this_process(prefect_harness, tmp_path, mnist_ref, manifest):
    result = run_infer_stage(InferConfig(batch_size=8), mnist_ref, manifest, str(tmp_path / "run"), {})
    assert isinstance(result, InferResult) and result.counts["files"] == result.counts["ok"] == 20
    assert Path(result.predictions_path) == tmp_path / "run" / "predictions.parquet"


def test_gpu_parameters_are_json_and_put_cuda_first(mnist_ref):
    cfg = InferConfig(pool="gpu", batch_size=64, progress=True)
    params = json.loads(json.dumps(gpu_parameters(cfg, mnist_ref, "/shared/run/manifest.parquet", "/shared/run")))
    ref = ModelRef.model_validate(params["model"])
    assert ref.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert ref.identity == mnist_ref.identity  # providers change speed, not results: reruns still reuse shards
    sent = InferConfig.model_validate(params["cfg"])
    assert (sent.pool, sent.progress, sent.batch_size) == ("local", False, 64)
    assert (params["manifest_path"], params["run_dir"]) == ("/shared/run/manifest.parquet", "/shared/run")
    assert "profile" not in params  # the GPU worker detects its own hardware, not the CPU worker's
    assert cfg.pool == "gpu" and cfg.progress  # derived, not mutated


def test_build_parameters_carry_what_the_worker_builds_the_model_from():
    from tasks.optimize.config import OptimizeConfig
    from tasks.prepare.config import PrepareConfig

    build = ModelBuild(model=ModelConfig(name="mnist-cnn"), prepare=PrepareConfig(parity_samples=16),
                       optimize=OptimizeConfig(variants=("fp32", "fp16")), sample=("/shared/in/a.png",),
                       truth={"a.png": "7"}, model_dir="/shared/run/model-gpu", tracking_uri="sqlite:////shared/m.db",
                       source_key="k" * 32)
    params = json.loads(json.dumps(build_parameters(InferConfig(pool="gpu", progress=True), build,
                                                    "/shared/run/manifest.parquet", "/shared/run")))
    assert ModelBuild.model_validate(params["build"]) == build
    assert "model" not in params  # the worker selects the variant: nothing selected on this machine is sent
    assert InferConfig.model_validate(params["cfg"]).pool == "local"


def test_gpu_pool_without_the_concurrency_limit_names_the_fix(prefect_harness, mnist_ref, manifest, tmp_path):
    with pytest.raises(UsageError, match="helios ops pools"):
        run_infer_stage(InferConfig(pool="gpu"), mnist_ref, manifest, str(tmp_path / "run"), {}, timeout_s=10)


def test_gpu_pool_without_the_deployment_names_the_fix(prefect_harness, mnist_ref, manifest, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=1))
        try:
            with pytest.raises(UsageError, match="prefect deploy --all"):
                run_infer_stage(InferConfig(pool="gpu"), mnist_ref, manifest, str(tmp_path / "run"), {}, timeout_s=10)
            assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots == 0  # slot released
        finally:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)


def test_timed_out_gpu_run_is_cancelled_before_the_slot_is_released(prefect_harness, mnist_ref, manifest, tmp_path):
    """No worker polls the pool, so the run is still Scheduled when the wait ends: it is set Cancelled, and the
    slot comes back only after that. (The started-run path, Cancelling -> the worker stops the process -> Cancelled,
    runs against a real server and process worker in tests/integration/test_dispatch_timeout.py.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.deployments import GPU_DEPLOYMENT, GPU_POOL

    flow_name, deployment_name = GPU_DEPLOYMENT.split("/")
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=1))
        client.create_work_pool(WorkPoolCreate(name=GPU_POOL, type="process"), overwrite=True)
        deployment_id = client.create_deployment(client.create_flow_from_name(flow_name), deployment_name,
                                                 work_pool_name=GPU_POOL, entrypoint="flows/infer.py:infer_flow")
        try:
            with pytest.raises(GpuStageError, match=r"gave no result in 3 s: cancelled by the pipeline, then its GPU "
                                                    r"slot was released"):
                run_infer_stage(InferConfig(pool="gpu"), mnist_ref, manifest, str(tmp_path / "run"), {}, timeout_s=3)
            ours = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            [run] = client.read_flow_runs(deployment_filter=ours)
            assert run.state.is_cancelled()
            assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots == 0
        finally:
            client.delete_global_concurrency_limit_by_name(GPU_LIMIT)
            client.delete_deployment(deployment_id)
            client.delete_work_pool(GPU_POOL)


def test_gpu_pool_never_gets_a_cpu_only_variant(tmp_path):
    from tasks.optimize.result import OptimizeResult, VariantReport

    def variant(name, selected=False, error=None):
        return VariantReport(name, tmp_path / f"{name}.onnx", "classifier", 1, None, None, None, 100.0, 8, None,
                             selected=selected, error=error)

    int8 = OptimizeResult(variant("int8-dynamic", True), [variant("fp32"), variant("int8-dynamic", True)], tmp_path)
    assert variant_for_pool(int8, "local").name == "int8-dynamic"  # the CPU runs what was selected for it
    assert variant_for_pool(int8, "gpu").name == "fp32"
    fused = OptimizeResult(variant("fp32-fused", True), [variant("fp32"), variant("fp32-fused", True)], tmp_path)
    assert variant_for_pool(fused, "gpu").name == "fp32-fused"  # lossless variants run on CUDA as they are
    only_int8 = OptimizeResult(variant("int8-static", True), [variant("fp32", error="failed"),
                                                              variant("int8-static", True)], tmp_path)
    assert variant_for_pool(only_int8, "gpu").name == "int8-static"  # nothing else to send


def test_completed_gpu_run_gives_back_its_result():
    infer = {"predictions_path": "/shared/run/predictions.parquet", "counts": {"files": 3, "ok": 3}, "seconds": 1.0,
             "files_per_s": 3.0, "batch_size": 32}
    value = {"infer": infer, "hardware": {"hardware_class": "gpu-h200-1x"}, "recommendation": {}}
    result = gpu_result_of(flow_run(Completed(data=value)))
    assert result == GpuStagesResult.model_validate(value) and result.infer == InferResult.model_validate(infer)
    assert gpu_result_of(flow_run(Completed(data=result))).hardware_class == "gpu-h200-1x"


@pytest.mark.parametrize(("state", "expected"), [
    (Failed(message="CUDA out of memory"), "ended Failed: CUDA out of memory"),
    (Running(), "still Running after 60 s and did not confirm its cancellation"),
    (Completed(), "PREFECT_RESULTS_PERSIST_BY_DEFAULT=true"),
])
def test_unfinished_failed_or_resultless_gpu_run_is_an_error_naming_the_run(state, expected):
    with pytest.raises(GpuStageError, match="brave-gpu") as info:
        gpu_result_of(flow_run(state), timeout_s=60)
    assert expected in str(info.value)


def test_a_local_model_file_is_sent_to_the_gpu_worker_as_an_absolute_path(tmp_path, monkeypatch):
    from flows.gpu_stages import shared_model

    (tmp_path / "net.onnx").write_bytes(b"onnx")
    monkeypatch.chdir(tmp_path)  # the worker runs in its own directory: a relative path would miss there
    assert shared_model(ModelConfig(name="net.onnx")).name == str(tmp_path / "net.onnx")
    assert shared_model(ModelConfig(name="mnist-cnn")).name == "mnist-cnn"


def test_subflows_started_inside_a_flow_run_send_no_heartbeats_of_their_own(prefect_harness):
    """The parent's heartbeats cover the process a subflow runs in; a top-level flow keeps its own."""
    from prefect import flow
    from prefect.settings import get_current_settings

    @flow
    def child():
        return get_current_settings().flows.heartbeat_frequency

    @flow
    def parent():
        plain = child()
        with nested_without_heartbeats():
            quiet = child()
        return plain, quiet

    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None  # Prefect's default: a flow run sends heartbeats
    assert parent() == (default, None)
    with nested_without_heartbeats():  # outside any flow run: nothing changes
        assert child() == default
