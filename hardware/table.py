"""`format_table()`: a readable rich table of a profile and its recommendation for `helios hardware`."""
from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from hardware.profile import HardwareProfile
from hardware.recommend import Recommendation

_GIB = 2**30


def format_table(profile: HardwareProfile, recommendation: Recommendation) -> Table:
    """Two-column table: machine facts, then recommendations, then what could not be read and why."""
    table = Table(title=f"Hardware: {profile.hardware_class}", show_header=True, header_style="bold")
    table.add_column("item", style="cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    for label, value in _machine_rows(profile):
        table.add_row(label, escape(value))
    table.add_section()
    for label, value in _recommendation_rows(recommendation):
        table.add_row(label, value)
    if profile.unavailable:
        table.add_section()
        for key, reason in sorted(profile.unavailable.items()):
            table.add_row(escape(f"n/a: {key}"), f"[dim]{escape(reason)}[/dim]")
    return table


def _machine_rows(profile: HardwareProfile) -> list[tuple[str, str]]:
    cpu, mem, runtime = profile.cpu, profile.memory, profile.runtime
    isa = [name for name, present in (("avx2", cpu.avx2), ("avx512f", cpu.avx512f), ("avx512_vnni", cpu.avx512_vnni),
                                      ("avx_vnni", cpu.avx_vnni), ("amx", cpu.amx)) if present]
    rows = [
        ("os", profile.os),
        ("cpu", f"{cpu.model or '?'} ({cpu.arch})"),
        ("cores", f"{_n(cpu.physical_cores)} physical, {_n(cpu.logical_cores)} logical, "
                  f"{_n(cpu.usable_cores)} usable"),
        ("isa", ", ".join(isa) or ("unknown" if cpu.avx2 is None else "none of avx2/avx512/vnni/amx")),
        ("caches", f"L1d {_kb(cpu.l1d_kb)}, L2 {_kb(cpu.l2_kb)}, L3 {_kb(cpu.l3_kb)}"),
        ("ram", f"{_gib(mem.available_bytes)} available of {_gib(mem.total_bytes)}"
                + (f" (cgroup limit {_gib(mem.cgroup_limit_bytes)})" if mem.cgroup_limit_bytes else "")),
    ]
    for gpu in profile.gpus:
        rows.append((f"gpu {gpu.index}", f"{gpu.name}, {_gib(gpu.memory_free_bytes)} free of "
                     f"{_gib(gpu.memory_total_bytes)}, cc {gpu.compute_capability or '?'}, driver "
                     f"{gpu.driver_version or '?'}, CUDA {gpu.cuda_version or '?'}, {_n(gpu.utilization_pct)}% busy, "
                     f"{_n(gpu.temperature_c)} °C, {_n(gpu.power_w)} W"))
    if not profile.gpus:
        rows.append(("gpus", "none"))
    rows.append(("onnxruntime", f"{runtime.onnxruntime_version or 'missing'}: {', '.join(runtime.ort_providers)}"))
    rows.append(("torch", "not probed" if runtime.torch_version is None else
                 f"{runtime.torch_version}, cuda {runtime.torch_cuda}, mps {runtime.torch_mps}"))
    if profile.disk is not None:
        disk = profile.disk
        rows.append(("disk", f"{_gib(disk.free_bytes)} free of {_gib(disk.total_bytes)} at {disk.path}"))
        rows.append(("read speed", "not measured" if disk.read_mb_s is None else
                     f"{disk.read_mb_s:.0f} MB/s ({disk.read_mb_s_method})"))
    power = profile.power
    rows.append(("power", "unknown" if power.on_ac is None else
                 ("AC" if power.on_ac else "battery") + (f", {power.battery_percent:.0f}%"
                                                          if power.battery_percent is not None else "")))
    if power.temperatures:
        rows.append(("thermal", ", ".join(f"{t.label} {t.current_c:.0f} °C" for t in power.temperatures)))
    return rows


def _recommendation_rows(rec: Recommendation) -> list[tuple[str, str]]:
    int8 = escape(", ".join(f"{key}={value}" for key, value in rec.int8_settings.items()))
    why = {key: escape(reason) for key, reason in rec.reasons.items()}
    return [
        ("providers", f"{' > '.join(rec.providers)}\n[dim]{why.get('providers', '')}[/dim]"),
        ("precisions", f"{', '.join(rec.precisions)}\n[dim]{why.get('precisions', '')}[/dim]"),
        ("threads", f"intra-op {rec.intra_op_threads}, inter-op {rec.inter_op_threads}"),
        ("batch size", f"{rec.batch_size}\n[dim]{why.get('batch_size', '')}[/dim]"),
        ("int8", f"{int8}\n[dim]{why.get('int8_settings', '')}[/dim]"),
    ]


def _n(value: object) -> str:
    return "?" if value is None else str(value)


def _kb(kb: int | None) -> str:
    if kb is None:
        return "?"
    return f"{kb // 1024} MiB" if kb >= 1024 and kb % 1024 == 0 else f"{kb} KiB"


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / _GIB:.1f} GiB"
