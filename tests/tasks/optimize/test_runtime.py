"""Provider fallback detection and the CUDA path (skipped without a usable GPU)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hardware import cpu_profile, gpu_info, recommend
from tasks.optimize.config import OptimizeConfig
from tasks.optimize.core import optimize_model
from tasks.optimize.runtime import open_runner
from tasks.session import ProviderFallback

FAST = dict(eval_samples=16, calibration_samples=16, latency_runs=5, batch_sizes=(1, 8))
CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")


def cuda_works() -> bool:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    import pynvml

    try:
        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except pynvml.NVMLError:  # no driver: no GPU
        return False


no_gpu = pytest.mark.skipif(cuda_works(), reason="CUDA works here: nothing falls back")
needs_gpu = pytest.mark.skipif(not cuda_works(), reason="needs an NVIDIA GPU with onnxruntime-gpu")


@no_gpu
def test_silent_fallback_to_cpu_is_detected_and_recorded(mnist, caplog):
    _, prepared = mnist
    runner = open_runner(prepared.onnx_path, CUDA, 1, on_fallback="warn")
    assert runner.handle.fell_back and runner.providers == ("CPUExecutionProvider",) and not runner.io_binding
    assert "fell back to CPU" in caplog.text
    with pytest.raises(ProviderFallback, match="CUDAExecutionProvider"):
        open_runner(prepared.onnx_path, CUDA, 1, on_fallback="fail")


@no_gpu
def test_gpu_profile_without_working_cuda_fails_or_warns_per_config(mnist, digits, tmp_path):
    adapter, prepared = mnist
    profile = cpu_profile(gpus=(gpu_info(),))  # NVML "saw" a GPU, but CUDA cannot start here
    rec = recommend(profile)
    assert rec.providers[0] == "CUDAExecutionProvider"
    cfg = OptimizeConfig(variants=("fp32",), on_provider_fallback="fail", **FAST)
    with pytest.raises(ProviderFallback):
        optimize_model(cfg, adapter, prepared, digits[0], tmp_path / "fail", profile, rec)
    warn = cfg.model_copy(update={"on_provider_fallback": "warn", "variants": ("fp32", "fp16")})
    result = optimize_model(warn, adapter, prepared, digits[0], tmp_path / "warn", profile, rec)
    assert [v.name for v in result.variants] == ["fp32", "fp16"]  # a GPU profile builds fp16
    for v in result.variants:
        row = v.to_dict()
        assert row["fell_back"] is True and row["providers"] == ["CPUExecutionProvider"]
        assert "ran on CPUExecutionProvider" in row["reason"]
    fp16 = onnx.load(str(result.variants[1].path))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)


@needs_gpu
def test_cuda_path_builds_fp16_and_runs_with_io_binding(mnist, digits, tmp_path):
    from hardware import detect

    adapter, prepared = mnist
    profile = detect(str(tmp_path), io_probe_seconds=0.1)
    rec = recommend(profile)
    cfg = OptimizeConfig(variants=("fp32", "fp16"), on_provider_fallback="fail", **FAST)
    result = optimize_model(cfg, adapter, prepared, digits[0], tmp_path, profile, rec)
    fp16 = next(v for v in result.variants if v.name == "fp16")
    assert fp16.error is None and fp16.providers[0] == "CUDAExecutionProvider" and not fp16.fell_back
    assert fp16.agreement >= 0.99
    runner = open_runner(fp16.path, rec.providers, 1, on_fallback="fail")
    assert runner.io_binding
    out = runner.run(adapter.example_inputs(4))
    assert out[0].shape == (4, 10) and np.isfinite(out[0]).all()
