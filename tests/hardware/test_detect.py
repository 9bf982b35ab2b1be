"""detect() on the machine running the tests: sane values, reasons for what is missing, JSON-safe."""
import json
import os
import time

import pytest

from hardware import HardwareProfile, detect

IO_SECONDS = 0.2


@pytest.fixture(scope="module")
def timed_profile(tmp_path_factory):
    start = time.perf_counter()
    profile = detect(tmp_path_factory.mktemp("input"), io_probe_seconds=IO_SECONDS, probe_torch=False)
    return profile, time.perf_counter() - start


def test_cores_and_ram_are_sane(timed_profile):
    profile, _ = timed_profile
    cpu, memory = profile.cpu, profile.memory
    assert 1 <= cpu.physical_cores <= cpu.logical_cores == os.cpu_count()
    assert 1 <= cpu.usable_cores <= cpu.logical_cores
    assert memory.total_bytes > 2**29 and 0 < memory.available_bytes <= memory.total_bytes
    assert cpu.l1d_kb is None or cpu.l1d_kb > 0


def test_missing_hardware_is_none_with_a_reason(timed_profile):
    profile, _ = timed_profile
    if profile.gpus:  # a GPU machine: every GPU came from NVML with a name
        assert all(gpu.name for gpu in profile.gpus)
    else:
        assert profile.gpus == () and profile.unavailable["gpus"]
    assert profile.unavailable["runtime.torch_cuda"] == "torch not imported (probe_torch=False)"
    for section, key in (("power", "on_ac"), ("runtime", "torch_mps")):
        if getattr(getattr(profile, section), key) is None:
            assert profile.unavailable[f"{section}.{key}"]


def test_runtime_and_disk_are_filled(timed_profile):
    profile, _ = timed_profile
    assert "CPUExecutionProvider" in profile.runtime.ort_providers
    assert profile.disk.free_bytes > 0 and profile.disk.read_mb_s > 0
    assert profile.disk.read_mb_s_method


def test_detect_takes_about_the_io_budget(timed_profile):
    _, seconds = timed_profile
    assert seconds < IO_SECONDS + 1.0


def test_detected_profile_round_trips_through_json(timed_profile):
    profile, _ = timed_profile
    assert HardwareProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_probe_torch_fills_torch_fields(tmp_path):
    profile = detect(tmp_path, io_probe_seconds=0, probe_torch=True)
    assert isinstance(profile.runtime.torch_cuda, bool) and isinstance(profile.runtime.torch_mps, bool)
    assert profile.runtime.torch_version
    assert profile.has_gpu or profile.runtime.torch_cuda is False
