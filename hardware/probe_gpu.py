"""GPU and runtime probes: NVIDIA GPUs through NVML, ONNX Runtime providers, torch CUDA/MPS.

No NVML library, no GPU and no torch are normal: each yields an empty/None value and a reason.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from hardware.profile import GpuInfo, RuntimeInfo


def probe_gpus() -> tuple[tuple[GpuInfo, ...], dict[str, str]]:
    """Every GPU NVML can see, with per-field reasons for readings the driver refuses."""
    try:
        import pynvml  # nvidia-ml-py; cheap to import, but only the probe needs it
    except ImportError as exc:
        return (), {"gpus": f"pynvml (nvidia-ml-py) not installed: {exc}"}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return (), {"gpus": f"NVML not available: {exc} (no NVIDIA driver on this machine)"}
    reasons: dict[str, str] = {}
    try:
        read = _reader(pynvml, reasons)
        driver = read("gpus.driver_version", lambda: _text(pynvml.nvmlSystemGetDriverVersion()))
        cuda = read("gpus.cuda_version", lambda: _cuda_version(pynvml.nvmlSystemGetCudaDriverVersion()))
        count = read("gpus", pynvml.nvmlDeviceGetCount) or 0
        gpus = tuple(_read_gpu(pynvml, read, index, driver, cuda) for index in range(count))
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            reasons["gpus.shutdown"] = f"nvmlShutdown failed: {exc}"
    gpus = tuple(gpu for gpu in gpus if gpu is not None)
    if not gpus:
        reasons.setdefault("gpus", "NVML is loaded but reports no usable GPU")
    return gpus, reasons


def _reader(pynvml: Any, reasons: dict[str, str]) -> Callable[..., Any]:
    """A call wrapper that turns an NVMLError into None plus a reason under `key`."""
    def read(key: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except pynvml.NVMLError as exc:
            reasons[key] = f"NVML: {exc}"
            return None
    return read


def _read_gpu(pynvml: Any, read: Callable[..., Any], index: int, driver: str | None,
              cuda: str | None) -> GpuInfo | None:
    handle = read(f"gpus[{index}]", pynvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return None
    key = f"gpus[{index}]."
    memory = read(key + "memory", pynvml.nvmlDeviceGetMemoryInfo, handle)
    capability = read(key + "compute_capability", pynvml.nvmlDeviceGetCudaComputeCapability, handle)
    utilization = read(key + "utilization_pct", pynvml.nvmlDeviceGetUtilizationRates, handle)
    milliwatts = read(key + "power_w", pynvml.nvmlDeviceGetPowerUsage, handle)
    return GpuInfo(
        index=index,
        name=_text(read(key + "name", pynvml.nvmlDeviceGetName, handle) or "unknown NVIDIA GPU"),
        memory_total_bytes=int(memory.total) if memory is not None else None,
        memory_free_bytes=int(memory.free) if memory is not None else None,
        compute_capability=f"{capability[0]}.{capability[1]}" if capability is not None else None,
        driver_version=driver,
        cuda_version=cuda,
        utilization_pct=int(utilization.gpu) if utilization is not None else None,
        temperature_c=read(key + "temperature_c", pynvml.nvmlDeviceGetTemperature, handle,
                           pynvml.NVML_TEMPERATURE_GPU),
        power_w=round(milliwatts / 1000, 1) if milliwatts is not None else None,
    )


def _text(value: str | bytes) -> str:
    """Older nvidia-ml-py releases return bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(encoded: int) -> str:
    """NVML encodes CUDA 12.4 as 12040."""
    return f"{encoded // 1000}.{encoded % 1000 // 10}"


def probe_runtime(probe_torch: bool | None, gpu_found: bool) -> tuple[RuntimeInfo, dict[str, str]]:
    """ORT version and providers; torch CUDA/MPS when asked, or (probe_torch=None) when it could matter.

    Importing torch costs about 1.5 s, so with probe_torch=None it is imported only if it is already
    loaded, NVML found a GPU, or the OS is macOS (MPS); otherwise the torch fields are None with a reason.
    """
    reasons: dict[str, str] = {}
    try:
        import onnxruntime as ort  # lazily: ~0.2 s, and only the probe needs it here
        ort_version, providers = ort.__version__, tuple(ort.get_available_providers())
    except ImportError as exc:
        ort_version, providers = None, ()
        reasons["runtime.ort_providers"] = f"onnxruntime not importable: {exc}"
    explicit = probe_torch is not None
    if probe_torch is None:
        probe_torch = "torch" in sys.modules or gpu_found or sys.platform == "darwin"
    if not probe_torch:
        reason = ("torch not imported (probe_torch=False)" if explicit else
                  "torch not imported (no GPU found and not macOS); pass probe_torch=True to check anyway")
        reasons.update({"runtime.torch_version": reason, "runtime.torch_cuda": reason, "runtime.torch_mps": reason})
        return RuntimeInfo(ort_version, providers, None, None, None), reasons
    try:
        import torch
    except ImportError as exc:
        reason = f"torch not importable: {exc}"
        reasons.update({"runtime.torch_version": reason, "runtime.torch_cuda": reason, "runtime.torch_mps": reason})
        return RuntimeInfo(ort_version, providers, None, None, None), reasons
    mps = getattr(torch.backends, "mps", None)
    return RuntimeInfo(ort_version, providers, str(torch.__version__), bool(torch.cuda.is_available()),
                       bool(mps is not None and mps.is_available())), reasons
