"""`detect()`: the one place Helios probes the machine. Everything else receives the profile."""
from __future__ import annotations

import platform
from pathlib import Path

from hardware.probe_cpu import probe_cpu
from hardware.probe_disk import probe_disk
from hardware.probe_gpu import probe_gpus, probe_runtime
from hardware.probe_system import probe_memory, probe_power
from hardware.profile import HardwareProfile


def detect(input_path: str | Path | None = None, io_probe_seconds: float = 1.0,
           probe_torch: bool | None = None) -> HardwareProfile:
    """Probe CPU, memory, GPUs, runtimes, disk and power into a frozen `HardwareProfile`.

    Takes about `io_probe_seconds` (the disk read measurement; 0 skips it) plus well under a second,
    except that probing torch adds ~1.5 s of import: `probe_torch=None` imports torch only when it is
    already loaded, NVML found a GPU, or on macOS; True/False force it. Nothing here raises for
    missing hardware or sensors: such fields are None and `profile.unavailable` says why.
    """
    unavailable: dict[str, str] = {}

    def keep(result):
        value, reasons = result
        unavailable.update(reasons)
        return value

    cpu = keep(probe_cpu())
    memory = keep(probe_memory())
    gpus = keep(probe_gpus())
    runtime = keep(probe_runtime(probe_torch, gpu_found=bool(gpus)))
    power = keep(probe_power())
    disk = keep(probe_disk(input_path, io_probe_seconds))
    return HardwareProfile(cpu=cpu, memory=memory, gpus=gpus, runtime=runtime, disk=disk, power=power,
                           os=f"{platform.system()} {platform.release()}".strip(),
                           unavailable=dict(sorted(unavailable.items())))
