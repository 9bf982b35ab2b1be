"""Memory, power-source and thermal probes (psutil, plus cgroup memory limits for containers)."""
from __future__ import annotations

from pathlib import Path

import psutil

from hardware.profile import MemoryInfo, PowerInfo, ThermalReading

_CGROUP = Path("/sys/fs/cgroup")
# cgroup v1 writes "unlimited" as a huge page-aligned number (2**63 rounded down); anything this big is no limit.
_UNLIMITED = 2**60
_MAX_THERMAL_READINGS = 32


def probe_memory() -> tuple[MemoryInfo, dict[str, str]]:
    """Total and available RAM; inside a container with a memory limit, the limit wins."""
    try:
        vm = psutil.virtual_memory()
    except OSError as exc:
        reason = f"psutil.virtual_memory() failed: {exc}"
        return MemoryInfo(None, None, None), {"memory.total_bytes": reason, "memory.available_bytes": reason}
    total, available = vm.total, vm.available
    limit = _cgroup_memory_limit()
    if limit is not None and limit < total:
        # cgroup usage counts page cache too, so this errs on the small side: the safe side for batch sizes.
        usage = _read_int(_CGROUP / "memory.current") or _read_int(_CGROUP / "memory" / "memory.usage_in_bytes")
        total = limit
        available = min(available, max(limit - (usage or 0), 0))
    return MemoryInfo(total_bytes=total, available_bytes=available, cgroup_limit_bytes=limit), {}


def _cgroup_memory_limit() -> int | None:
    """The container's memory limit in bytes (cgroup v2, then v1); None when there is none."""
    for path in (_CGROUP / "memory.max", _CGROUP / "memory" / "memory.limit_in_bytes"):
        value = _read_int(path)
        if value is not None:
            return value if value < _UNLIMITED else None
    return None


def _read_int(path: Path) -> int | None:
    """An integer from a one-line kernel file; None if missing or "max"."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def probe_power() -> tuple[PowerInfo, dict[str, str]]:
    """AC/battery state and temperature sensors, each None/empty with a reason when the OS hides them."""
    reasons: dict[str, str] = {}
    on_ac, percent = _battery(reasons)
    return PowerInfo(on_ac=on_ac, battery_percent=percent, temperatures=_temperatures(reasons)), reasons


def _battery(reasons: dict[str, str]) -> tuple[bool | None, float | None]:
    sensors_battery = getattr(psutil, "sensors_battery", None)
    if sensors_battery is None:
        reasons["power"] = "psutil has no battery API on this OS"
        return None, None
    try:
        battery = sensors_battery()
    except (OSError, RuntimeError) as exc:
        reasons["power"] = f"psutil.sensors_battery() failed: {exc}"
        return None, None
    if battery is None:
        # No battery is what servers and VMs report; AC is likely but nothing confirms it, so say None.
        reasons["power.on_ac"] = "no battery reported (server, desktop or VM); power source not exposed"
        reasons["power.battery_percent"] = "no battery"
        return None, None
    if battery.power_plugged is None:
        reasons["power.on_ac"] = "battery present but plug state unknown"
    return battery.power_plugged, float(battery.percent)


def _temperatures(reasons: dict[str, str]) -> tuple[ThermalReading, ...]:
    sensors_temperatures = getattr(psutil, "sensors_temperatures", None)
    if sensors_temperatures is None:
        reasons["power.temperatures"] = "psutil has no temperature API on this OS"
        return ()
    try:
        sensors = sensors_temperatures()
    except (OSError, RuntimeError) as exc:
        reasons["power.temperatures"] = f"psutil.sensors_temperatures() failed: {exc}"
        return ()
    readings = tuple(ThermalReading(sensor=name, label=entry.label or name, current_c=float(entry.current))
                     for name, entries in sorted(sensors.items()) for entry in entries)
    if not readings:
        reasons["power.temperatures"] = "no thermal sensors exposed by the OS (usual in VMs and containers)"
    return readings[:_MAX_THERMAL_READINGS]
