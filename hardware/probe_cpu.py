"""CPU probe: model, cores, int8-relevant ISA flags and cache sizes.

Sources, in order: /proc/cpuinfo (model, flags), psutil/os (cores, affinity), cgroup files (CPU
quota), /sys/devices/system/cpu/cpu0/cache then `lscpu -C` (caches). Each probe returns its value
and a dict of reasons for whatever it could not read.
"""
from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path

import psutil

from hardware.profile import CpuInfo

_CPUINFO = Path("/proc/cpuinfo")
_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
_CGROUP = Path("/sys/fs/cgroup")
_AMX_FLAGS = {"amx_tile", "amx_int8", "amx_bf16"}
_SIZE_UNITS = {"K": 1, "M": 1024, "G": 1024 * 1024}
# (level, sysfs type) -> CpuInfo field; L1 instruction cache is irrelevant to kernel choice.
_CACHE_FIELDS = {(1, "Data"): "l1d_kb", (2, "Unified"): "l2_kb", (3, "Unified"): "l3_kb"}
_LSCPU_NAMES = {"L1d": "l1d_kb", "L2": "l2_kb", "L3": "l3_kb"}


def probe_cpu() -> tuple[CpuInfo, dict[str, str]]:
    """Read the CPU description; never raises for a missing source, records why instead."""
    reasons: dict[str, str] = {}
    arch = platform.machine() or "unknown"
    model, flags = _read_cpuinfo(reasons)
    physical = psutil.cpu_count(logical=False)
    if physical is None:
        reasons["cpu.physical_cores"] = "psutil cannot count physical cores on this OS"
    logical = os.cpu_count()
    if logical is None:
        reasons["cpu.logical_cores"] = "os.cpu_count() returned None"
    isa = _isa_flags(flags, arch)
    if flags is None and not isa:
        reasons["cpu.isa"] = f"no CPU flags readable from {_CPUINFO}; ISA extensions unknown"
        isa = {name: None for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx")}
    caches = _cache_sizes_kb(reasons)
    return CpuInfo(model=model, arch=arch, physical_cores=physical, logical_cores=logical,
                   usable_cores=_usable_cores(logical), **isa, **caches), reasons


def _read_cpuinfo(reasons: dict[str, str]) -> tuple[str | None, set[str] | None]:
    """Model name and flag set from /proc/cpuinfo (first processor only: they are all alike)."""
    try:
        text = _CPUINFO.read_text(errors="replace")
    except OSError as exc:
        model = platform.processor() or None
        if model is None:
            reasons["cpu.model"] = f"cannot read {_CPUINFO}: {exc}"
        return model, None
    model = flags = None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if model is None and key in ("model name", "Model", "Hardware"):
            model = value or None
        elif flags is None and key in ("flags", "Features"):  # x86 / ARM spelling
            flags = set(value.split())
    if model is None:
        reasons["cpu.model"] = f"no model name in {_CPUINFO}"
    return model, flags


def _isa_flags(flags: set[str] | None, arch: str) -> dict[str, bool | None]:
    """The ISA booleans; empty when the flags are unknown on x86 (the caller records why)."""
    if arch.lower() in ("aarch64", "arm64"):
        # x86 extensions are definitely absent on ARM, whatever /proc says.
        return {"avx2": False, "avx512f": False, "avx512_vnni": False, "avx_vnni": False, "amx": False}
    if flags is None:
        return {}
    return {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "avx_vnni": "avx_vnni" in flags, "amx": bool(flags & _AMX_FLAGS)}


def _usable_cores(logical: int | None) -> int | None:
    """Logical CPUs this process may run on: affinity mask, then a cgroup CPU quota, whichever is lower."""
    usable = logical
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        usable = min(usable or math.ceil(quota), math.ceil(quota))
    return usable


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by a container's CFS quota (cgroup v2, then v1); None when unlimited or unknown."""
    try:
        quota, period = (_CGROUP / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass  # no cgroup v2 CPU controller here; try v1
    try:
        quota_us = int((_CGROUP / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((_CGROUP / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _cache_sizes_kb(reasons: dict[str, str]) -> dict[str, int | None]:
    """Per-instance L1d/L2/L3 sizes in KiB from sysfs, falling back to `lscpu -C` for what is missing."""
    sizes: dict[str, int | None] = dict.fromkeys(_CACHE_FIELDS.values())
    for index in sorted(_CACHE_DIR.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
            field_name = _CACHE_FIELDS.get((level, kind))
            if field_name and size[-1:] in _SIZE_UNITS:
                sizes[field_name] = int(size[:-1]) * _SIZE_UNITS[size[-1]]
        except (OSError, ValueError):
            continue  # one unreadable cache level should not hide the others
    if None in sizes.values():
        _fill_from_lscpu(sizes, reasons)
    return sizes


def _fill_from_lscpu(sizes: dict[str, int | None], reasons: dict[str, str]) -> None:
    """Fill missing cache sizes from `lscpu -C=NAME,ONE-SIZE -B` (bytes per instance)."""
    try:
        out = subprocess.run(["lscpu", "-C=NAME,ONE-SIZE", "-B"], capture_output=True, text=True,
                             timeout=2, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        missing = [name for name, size in sizes.items() if size is None]
        reasons["cpu.caches"] = f"{', '.join(missing)} not in {_CACHE_DIR} and lscpu failed: {exc}"
        return
    for line in out.splitlines()[1:]:
        parts = line.split()
        field_name = _LSCPU_NAMES.get(parts[0]) if len(parts) == 2 else None
        if field_name and sizes[field_name] is None and parts[1].isdigit():
            sizes[field_name] = int(parts[1]) // 1024
    missing = [name for name, size in sizes.items() if size is None]
    if missing:
        reasons["cpu.caches"] = f"{', '.join(missing)} reported neither by {_CACHE_DIR} nor by lscpu"
