"""format_table renders a readable table, including reasons that look like rich markup."""
import io

from rich.console import Console

from hardware import cpu_profile, format_table, recommend
from hardware.builders import gpu_info


def _render(profile):
    console = Console(file=io.StringIO(), width=140)
    console.print(format_table(profile, recommend(profile)))
    return console.file.getvalue()


def test_cpu_table_shows_class_providers_and_reasons():
    text = _render(cpu_profile())
    assert "cpu-avx2-2c" in text and "CPUExecutionProvider" in text
    assert "reduce_range=True" in text and "n/a: gpus" in text


def test_gpu_table_keeps_bracketed_keys_literal():
    profile = cpu_profile(gpus=(gpu_info(),))
    profile = type(profile)(**{**profile.__dict__, "unavailable": {"gpus[0].power_w": "NVML: Not Supported"}})
    text = _render(profile)
    assert "gpus[0].power_w" in text and "NVIDIA H100 80GB HBM3" in text
    assert "CUDAExecutionProvider > CPUExecutionProvider" in text
