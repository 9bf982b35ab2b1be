"""Hardware detection and recommendations: the only package in Helios that probes the machine.

    profile = detect("data/", io_probe_seconds=1.0)
    rec = recommend(profile)
    print(json.dumps({"profile": profile.to_dict(), "recommendation": rec.to_dict()}))
"""
from hardware.builders import cpu_profile, gpu_info
from hardware.detect import detect
from hardware.profile import (CpuInfo, DiskInfo, GpuInfo, HardwareProfile, MemoryInfo, PowerInfo, RuntimeInfo,
                              ThermalReading)
from hardware.recommend import Recommendation, recommend
from hardware.table import format_table

__all__ = [
    "CpuInfo", "DiskInfo", "GpuInfo", "HardwareProfile", "MemoryInfo", "PowerInfo", "Recommendation",
    "RuntimeInfo", "ThermalReading", "cpu_profile", "detect", "format_table", "gpu_info", "recommend",
]
