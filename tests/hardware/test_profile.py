"""HardwareProfile: hardware_class stability, JSON round-trip, validation of foreign dicts."""
import dataclasses
import json

import pytest

from hardware import HardwareProfile, PowerInfo, ThermalReading, cpu_profile
from hardware.builders import gpu_info


def test_hardware_class_names_isa_and_cores():
    assert cpu_profile(cores=2).hardware_class == "cpu-avx2-2c"
    assert cpu_profile(cores=16, avx512_vnni=True).hardware_class == "cpu-avx512-vnni-16c"
    assert cpu_profile(cores=8, amx=True).hardware_class == "cpu-amx-8c"
    assert cpu_profile(cores=4, arch="aarch64", avx2=False).hardware_class == "cpu-arm64-4c"


def test_hardware_class_ignores_free_memory_and_names_gpus():
    busy = cpu_profile(available_gb=1, gpus=(gpu_info(free_gb=3),))
    idle = cpu_profile(available_gb=20, gpus=(gpu_info(free_gb=79),))
    assert busy.hardware_class == idle.hardware_class == "gpu-nvidia-h100-80gb"
    two = cpu_profile(gpus=(gpu_info(index=0), gpu_info(index=1)))
    assert two.hardware_class == "gpu-2x-nvidia-h100-80gb"
    assert cpu_profile(gpus=(gpu_info("Tesla T4", memory_gb=14.6),)).hardware_class == "gpu-nvidia-tesla-t4-15gb"


def test_has_gpu():
    assert not cpu_profile().has_gpu
    assert cpu_profile(gpus=(gpu_info(),)).has_gpu


def test_round_trip_through_json_is_exact():
    profile = dataclasses.replace(
        cpu_profile(gpus=(gpu_info(),)),
        power=PowerInfo(on_ac=True, battery_percent=81.0, temperatures=(ThermalReading("k10temp", "Tctl", 48.5),)))
    data = json.loads(json.dumps(profile.to_dict()))
    assert data["hardware_class"] == profile.hardware_class and data["has_gpu"] is True
    assert HardwareProfile.from_dict(data) == profile


def test_profile_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        cpu_profile().os = "other"  # type: ignore[misc]


def test_from_dict_rejects_other_schemas_and_shapes():
    data = cpu_profile().to_dict()
    with pytest.raises(ValueError, match="schema"):
        HardwareProfile.from_dict({**data, "schema": 99})
    with pytest.raises(ValueError, match="not a hardware profile"):
        HardwareProfile.from_dict({**data, "cpu": {"model": "x"}})
