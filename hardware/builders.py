"""Hand-built profiles for tests and examples: the rest of Helios never probes the machine itself."""
from __future__ import annotations

from hardware.profile import CpuInfo, GpuInfo, HardwareProfile, MemoryInfo, PowerInfo, RuntimeInfo

_GIB = 2**30


def gpu_info(name: str = "NVIDIA H100 80GB HBM3", memory_gb: float = 79.6, free_gb: float | None = None,
             index: int = 0, compute_capability: str = "9.0", cuda_version: str = "13.0") -> GpuInfo:
    """A GpuInfo as NVML would report it; free memory defaults to all of it."""
    free = memory_gb if free_gb is None else free_gb
    return GpuInfo(index=index, name=name, memory_total_bytes=int(memory_gb * _GIB),
                   memory_free_bytes=int(free * _GIB), compute_capability=compute_capability,
                   driver_version="580.00", cuda_version=cuda_version, utilization_pct=0, temperature_c=35,
                   power_w=70.0)


def cpu_profile(cores: int = 2, avx2: bool = True, avx512_vnni: bool = False, ram_gb: float = 24,
                available_gb: float | None = None, gpus: tuple[GpuInfo, ...] = (),
                ort_providers: tuple[str, ...] | None = None, arch: str = "x86_64", amx: bool = False,
                avx_vnni: bool = False) -> HardwareProfile:
    """A profile built by hand: `cores` physical cores, the given ISA flags, RAM in GiB, optional GPUs.

    `ort_providers` defaults to CUDA+CPU when GPUs are given, CPU only otherwise. No disk probe.
    """
    if ort_providers is None:
        ort_providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if gpus else ("CPUExecutionProvider",)
    available = ram_gb if available_gb is None else available_gb
    cpu = CpuInfo(model="hand-built CPU", arch=arch, physical_cores=cores, logical_cores=cores,
                  usable_cores=cores, avx2=avx2, avx512f=avx512_vnni or amx, avx512_vnni=avx512_vnni,
                  avx_vnni=avx_vnni, amx=amx, l1d_kb=32, l2_kb=512, l3_kb=32768)
    return HardwareProfile(
        cpu=cpu,
        memory=MemoryInfo(total_bytes=int(ram_gb * _GIB), available_bytes=int(available * _GIB),
                          cgroup_limit_bytes=None),
        gpus=tuple(gpus),
        runtime=RuntimeInfo(onnxruntime_version="hand-built", ort_providers=tuple(ort_providers),
                            torch_version=None, torch_cuda=None, torch_mps=None),
        disk=None,
        power=PowerInfo(on_ac=None, battery_percent=None),
        os="hand-built",
        unavailable={} if gpus else {"gpus": "hand-built profile without GPUs"},
    )
