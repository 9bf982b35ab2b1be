"""Compute cost: the hourly price of a hardware class from tracking.hourly_usd, per run and per 1,000 files."""
from __future__ import annotations

import pytest

from tasks.report.costs import DEFAULT_HOURLY_USD, hourly_price, run_costs, units


def test_units_are_gpus_for_gpu_classes_and_cores_for_cpu_classes():
    assert units("gpu-nvidia-h100-80gb") == 1 and units("gpu-4x-nvidia-h100-80gb") == 4
    assert units("cpu-avx2-8c") == 8 and units("cpu-odd") == 1


def test_the_longest_matching_key_prices_the_class():
    table = {"gpu": 1.0, "gpu-h100": 6.0, "cpu": 0.05, "cpu-avx2-8c": 0.03}
    assert hourly_price("gpu-2x-nvidia-h100-80gb", table) == (12.0, "gpu-h100")
    assert hourly_price("gpu-nvidia-l4", table) == (1.0, "gpu")
    assert hourly_price("cpu-avx2-8c", table) == (pytest.approx(0.24), "cpu-avx2-8c")
    assert hourly_price("cpu-avx512-4c", table) == (pytest.approx(0.2), "cpu")
    assert hourly_price("tpu-v5", table) == (None, None) and hourly_price(None, table) == (None, None)


def test_run_costs_from_wall_time_and_files():
    costs = run_costs("cpu-avx2-2c", {"cpu": 0.05}, {"detect": 1800.0, "infer": 1800.0}, 500, 0.2)
    assert costs["hourly_usd"] == pytest.approx(0.1) and costs["wall_seconds"] == 3600
    assert costs["compute_usd"] == pytest.approx(0.1) and costs["total_usd"] == pytest.approx(0.3)
    assert costs["compute_per_1k_files_usd"] == pytest.approx(0.2) and costs["total_per_1k_files_usd"] == pytest.approx(0.6)
    unpriced = run_costs("tpu-v5", {"cpu": 0.05}, {"infer": 10.0}, 0, 0.0)
    assert unpriced["compute_usd"] is None and "tracking.hourly_usd" in unpriced["note"]


def test_the_config_takes_the_defaults_and_rejects_bad_entries():
    from pydantic import ValidationError

    from flows.config import PipelineConfig

    assert PipelineConfig().tracking.hourly_usd == DEFAULT_HOURLY_USD
    assert hourly_price("cpu-amx-2c", DEFAULT_HOURLY_USD)[0] > 0
    for bad in ({"gpu-*": 1.0}, {"tpu": 1.0}, {"cpu": -1.0}):
        with pytest.raises(ValidationError, match="tracking.hourly_usd"):
            PipelineConfig.model_validate({"tracking": {"hourly_usd": bad}})
