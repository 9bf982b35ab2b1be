"""The frozen hardware profile: what `detect()` found, JSON-safe and rebuildable anywhere.

Every field that could not be read is None, and `HardwareProfile.unavailable` says why, keyed by
the field's dotted name (e.g. {"gpus": "NVML not available: ..."}).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
_ARM = ("aarch64", "arm64")
# Memory size and memory type say nothing new once the rounded total is appended; "PCIe"/"SXM" stay
# because they are different chips in practice (clocks, power limit).
_GPU_NAME_NOISE = re.compile(r"\d+gb|hbm\d*e?|gddr\d+x?")


@dataclass(frozen=True)
class CpuInfo:
    """CPU model, core counts, the ISA flags that matter for int8 kernels, and per-core cache sizes."""

    model: str | None
    arch: str
    physical_cores: int | None
    logical_cores: int | None
    usable_cores: int | None  # after CPU affinity and cgroup quota: what this process may really use
    avx2: bool | None
    avx512f: bool | None
    avx512_vnni: bool | None
    avx_vnni: bool | None
    amx: bool | None
    l1d_kb: int | None
    l2_kb: int | None
    l3_kb: int | None

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in _X86

    @property
    def is_arm(self) -> bool:
        return self.arch.lower() in _ARM

    @property
    def vnni(self) -> bool:
        """True when u8*s8 dot products accumulate without 16-bit saturation (AVX-512 VNNI, AVX-VNNI, AMX)."""
        return bool(self.avx512_vnni or self.avx_vnni or self.amx)

    @property
    def effective_cores(self) -> int:
        """Cores worth one compute thread each: physical cores, capped by affinity/quota; at least 1."""
        known = [n for n in (self.physical_cores, self.usable_cores) if n]
        if known:
            return min(known)
        return self.logical_cores or 1

    @property
    def isa_level(self) -> str:
        """The best int8-relevant ISA as a short stable name."""
        if self.is_arm:
            return "arm64"
        for name, present in (("amx", self.amx), ("avx512-vnni", self.avx512_vnni), ("avx512", self.avx512f),
                              ("avx-vnni", self.avx_vnni), ("avx2", self.avx2)):
            if present:
                return name
        return "generic"


@dataclass(frozen=True)
class MemoryInfo:
    """System RAM in bytes; `available_bytes` already honours a cgroup memory limit when one is set."""

    total_bytes: int | None
    available_bytes: int | None
    cgroup_limit_bytes: int | None


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as NVML reports it. Driver and CUDA versions are system-wide but kept per GPU
    so that each record stands alone."""

    index: int
    name: str
    memory_total_bytes: int | None
    memory_free_bytes: int | None
    compute_capability: str | None
    driver_version: str | None
    cuda_version: str | None
    utilization_pct: int | None
    temperature_c: int | None
    power_w: float | None


@dataclass(frozen=True)
class RuntimeInfo:
    """What the inference runtimes can use: ONNX Runtime providers and torch's CUDA/MPS view."""

    onnxruntime_version: str | None
    ort_providers: tuple[str, ...]
    torch_version: str | None
    torch_cuda: bool | None
    torch_mps: bool | None


@dataclass(frozen=True)
class DiskInfo:
    """Free space and measured read bandwidth of the filesystem holding the input (or the cwd).

    `read_mb_s_method` says what was read and whether the page cache could have served it, because a
    cached read reports memory speed, not disk speed.
    """

    path: str
    total_bytes: int
    free_bytes: int
    read_mb_s: float | None
    read_mb_s_method: str | None
    read_bytes: int
    read_seconds: float


@dataclass(frozen=True)
class ThermalReading:
    """One temperature sensor from psutil.sensors_temperatures()."""

    sensor: str
    label: str
    current_c: float


@dataclass(frozen=True)
class PowerInfo:
    """Power source and thermal sensors, where the OS exposes them (VMs and servers often do not)."""

    on_ac: bool | None
    battery_percent: float | None
    temperatures: tuple[ThermalReading, ...] = ()


@dataclass(frozen=True)
class HardwareProfile:
    """Everything Helios needs to know about the machine; build with `detect()` or by hand in tests."""

    cpu: CpuInfo
    memory: MemoryInfo
    gpus: tuple[GpuInfo, ...]
    runtime: RuntimeInfo
    disk: DiskInfo | None
    power: PowerInfo
    os: str
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def has_gpu(self) -> bool:
        """True when NVML found at least one GPU (not whether a runtime can use it)."""
        return bool(self.gpus)

    @property
    def hardware_class(self) -> str:
        """Short stable name for grouping runs, e.g. "cpu-avx2-2c" or "gpu-nvidia-h100-80gb".

        Built only from things that do not change between runs: no free memory, no clocks, no times.
        """
        if self.gpus:
            count = f"{len(self.gpus)}x-" if len(self.gpus) > 1 else ""
            return f"gpu-{count}{_gpu_slug(self.gpus[0])}"
        return f"cpu-{self.cpu.isa_level}-{self.cpu.effective_cores}c"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists in JSON); derived `has_gpu`/`hardware_class` included for readers."""
        data = asdict(self)
        data["unavailable"] = dict(sorted(self.unavailable.items()))
        return {"schema": SCHEMA_VERSION, **data, "has_gpu": self.has_gpu, "hardware_class": self.hardware_class}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareProfile:
        """Rebuild a profile from `to_dict()` output (or its JSON), e.g. on a remote worker."""
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise ValueError(f"hardware profile schema {schema!r} is not supported; expected {SCHEMA_VERSION} "
                             "(re-run `helios hardware` with this Helios version)")
        try:
            runtime, power, disk = data["runtime"], data["power"], data["disk"]
            return cls(
                cpu=CpuInfo(**data["cpu"]),
                memory=MemoryInfo(**data["memory"]),
                gpus=tuple(GpuInfo(**gpu) for gpu in data["gpus"]),
                runtime=RuntimeInfo(**{**runtime, "ort_providers": tuple(runtime["ort_providers"])}),
                disk=DiskInfo(**disk) if disk is not None else None,
                power=PowerInfo(on_ac=power["on_ac"], battery_percent=power["battery_percent"],
                                temperatures=tuple(ThermalReading(**t) for t in power["temperatures"])),
                os=data["os"],
                unavailable=dict(data.get("unavailable", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a hardware profile dict (schema {SCHEMA_VERSION}): {exc}") from exc


def _gpu_slug(gpu: GpuInfo) -> str:
    """"NVIDIA H100 80GB HBM3" with 79.6 GiB -> "nvidia-h100-80gb"."""
    tokens = [t for t in re.findall(r"[a-z0-9]+", gpu.name.lower()) if not _GPU_NAME_NOISE.fullmatch(t)]
    if tokens[:1] != ["nvidia"]:
        tokens.insert(0, "nvidia")
    if gpu.memory_total_bytes:
        tokens.append(f"{round(gpu.memory_total_bytes / 2**30)}gb")
    return "-".join(tokens)
