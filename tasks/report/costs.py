"""What a run cost: compute (an hourly price for the hardware class times the measured wall time) plus the LLM's.

``tracking.hourly_usd`` maps keys to a USD price per hour of one unit: one GPU for ``gpu-...`` classes (a class with
``Nx-`` in it has N), one core for ``cpu-...-Nc`` classes. A key is a kind (``gpu``, ``cpu``), or a kind and a
fragment (``gpu-h100``, ``cpu-avx512``): it matches the hardware classes of that kind whose name contains the
fragment, so a full class name (``cpu-avx2-8c``) matches itself. The longest matching key wins. The defaults are approximate AWS on-demand list prices
(us-east-1, Linux) as published in mid-2025, per GPU = instance price / GPUs, per core = c7i price / vCPUs; they were
written down without network access to re-check them, so replace them with your own rates (cloud price pages, your
contract, or amortized hardware plus power for machines you own).
"""
from __future__ import annotations

import re
from typing import Any

# key -> USD per unit-hour (keys use only letters, digits and dashes: they become MLflow param names)
DEFAULT_HOURLY_USD: dict[str, float] = {
    "gpu-h200": 7.91,    # p5en.48xlarge, 8x H200
    "gpu-h100": 6.88,    # p5.48xlarge, 8x H100
    "gpu-a100": 2.75,    # p4d.24xlarge, 8x A100 40 GB
    "gpu-l4": 0.80,      # g6.xlarge, 1x L4
    "gpu-a10": 1.01,     # g5.xlarge, 1x A10G
    "gpu-t4": 0.53,      # g4dn.xlarge, 1x T4
    "gpu": 1.01,         # any other GPU: priced like an A10G
    "cpu": 0.045,        # c7i.large: 2 vCPU for 0.089 USD/h
}
KINDS = ("cpu", "gpu")


def units(hardware_class: str) -> int:
    """GPUs of a ``gpu-`` class (``gpu-2x-...`` has 2), cores of a ``cpu-...-Nc`` class; 1 when the name says neither."""
    gpus = re.match(r"gpu-(\d+)x-", hardware_class)
    if gpus:
        return int(gpus.group(1))
    cores = re.search(r"-(\d+)c$", hardware_class) if hardware_class.startswith("cpu-") else None
    return int(cores.group(1)) if cores else 1


def matches(key: str, hardware_class: str) -> bool:
    """Whether price key ``key`` (``gpu``, ``gpu-h100``, ``cpu-avx2-8c``) covers ``hardware_class``."""
    kind, _, fragment = key.partition("-")
    return hardware_class.startswith(f"{kind}-") and fragment in hardware_class[len(kind) + 1:]


def hourly_price(hardware_class: str | None, table: dict[str, float]) -> tuple[float | None, str | None]:
    """(USD per hour of the whole class, the key that priced it); (None, None) when no key matches."""
    keys = sorted((k for k in table if hardware_class and matches(k, hardware_class)), key=len, reverse=True)
    if not keys:
        return None, None
    return round(table[keys[0]] * units(hardware_class), 6), keys[0]


def run_costs(hardware_class: str | None, table: dict[str, float], stages: dict[str, float], files: int,
              llm_usd: float) -> dict[str, Any]:
    """The run's cost section: hourly price, wall seconds (the stages' sum), compute and LLM USD, per 1,000 files."""
    hourly, key = hourly_price(hardware_class, table)
    seconds = round(sum(stages.values()), 3)
    compute = None if hourly is None else round(hourly * seconds / 3600, 6)
    total = round((compute or 0.0) + llm_usd, 6)
    costs: dict[str, Any] = {
        "hardware_class": hardware_class, "hourly_usd": hourly, "price_key": key, "wall_seconds": seconds,
        "compute_usd": compute, "llm_usd": round(llm_usd, 6), "total_usd": total,
        "compute_per_1k_files_usd": round(compute * 1000 / files, 6) if compute is not None and files else None,
        "total_per_1k_files_usd": round(total * 1000 / files, 6) if files else None,
    }
    if hourly is None:
        costs["note"] = (f"no price for hardware class {hardware_class!r}: add its kind (cpu, gpu) or the class "
                         "itself to tracking.hourly_usd")
    return costs
