"""optimize_model end to end with the real exporter, quantizer and ONNX Runtime on real MNIST digits."""
import ast
import json
from pathlib import Path

import onnx
import pytest

from tasks.optimize.config import OptimizeConfig
from tasks.optimize.core import optimize_model
from tasks.optimize.result import OptimizeResult

CONTRACT = {"name", "path", "size_bytes", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_per_s",
            "best_batch", "peak_mem_mb", "agreement", "accuracy", "selected", "reason", "providers"}
FAST = dict(eval_samples=48, calibration_samples=32, latency_runs=5, batch_sizes=(1, 16))


def test_mnist_variants_are_built_measured_and_one_is_selected(mnist, digits, avx2, tmp_path):
    adapter, prepared = mnist
    cfg = OptimizeConfig(variants=("fp32", "int8-dynamic", "int8-static"), **FAST)
    result = optimize_model(cfg, adapter, prepared, digits[0], tmp_path, *avx2, truth=digits[1])
    table = json.loads(result.table_path.read_text())
    assert result.table_path == tmp_path / "optimize.json"
    assert [v["name"] for v in table["variants"]] == ["fp32", "int8-dynamic", "int8-static"]
    assert table["selected"] == result.selected.name and sum(v["selected"] for v in table["variants"]) == 1
    assert table["hardware_class"] == "cpu-avx2-2c" and table["int8_settings"]["reduce_range"] is True
    for v in result.variants:
        row = v.to_dict()
        assert CONTRACT <= set(row) and row["reason"] and row["providers"] == ["CPUExecutionProvider"]
        assert row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
        assert row["throughput_per_s"] > 0 and row["best_batch"] in (1, 16) and row["size_bytes"] > 0
        assert row["accuracy"] >= 0.9  # real labelled digits
        recipe = json.loads(v.path.with_suffix(".json").read_text())
        assert recipe["variant"] == v.name and recipe["versions"]["onnxruntime"]
        onnx.checker.check_model(str(v.path))
    fp32 = json.loads((tmp_path / "fp32.json").read_text())
    assert fp32["graph_optimization"]["saved_offline"] is True
    static = json.loads((tmp_path / "int8-static.json").read_text())["quantization"]
    assert static["calibration"] == {"method": "MinMax", "batches": 2, "items": 32}
    assert static["nodes_excluded"]  # the output head stays fp32
    assert result.skipped == {}
    back = OptimizeResult.from_dict(table, result.table_path)  # as the pipeline reads a GPU worker's result back
    assert (back.selected, back.variants, back.skipped) == (result.selected, result.variants, result.skipped)
    assert back.context["hardware_class"] == "cpu-avx2-2c"


def test_skipped_variants_say_why(mnist, digits, avx2, tmp_path):
    adapter, prepared = mnist
    result = optimize_model(OptimizeConfig(variants=("fp32", "fp32-fused", "fp16"), **FAST), adapter, prepared,
                            digits[0], tmp_path, *avx2)
    assert [v.name for v in result.variants] == ["fp32"] and result.selected.name == "fp32"
    assert "not a transformer" in result.skipped["fp32-fused"]
    assert "GPU" in result.skipped["fp16"]


def test_disabled_selects_the_exported_model(mnist, digits, avx2, tmp_path):
    adapter, prepared = mnist
    result = optimize_model(OptimizeConfig(enabled=False), adapter, prepared, digits[0], tmp_path, *avx2)
    assert result.selected.path == prepared.onnx_path and result.selected.reason == "optimize disabled"
    assert [v.name for v in result.variants] == ["fp32"]
    assert json.loads(result.table_path.read_text())["selected"] == "fp32"


def test_undecodable_sample_fails_before_building(mnist, avx2, tmp_path):
    from helios.models import InputError

    adapter, prepared = mnist
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(InputError, match="none of the 1 sample files could be decoded"):
        optimize_model(OptimizeConfig(**FAST), adapter, prepared, [junk], tmp_path / "out", *avx2)


def test_config_rejects_bad_batch_sizes_and_keeps_fp32_first():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="positive integers"):
        OptimizeConfig(batch_sizes=(0, 8))
    assert OptimizeConfig(variants=("int8-static", "fp16")).variants == ("fp32", "fp16", "int8-static")


def test_core_never_imports_prefect_or_mlflow():
    root = Path(__file__).parents[3] / "tasks" / "optimize"
    for path in root.glob("*.py"):
        if path.name == "task.py":
            continue
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n.split(".")[0] for n in names} & {"prefect", "mlflow"}, path.name
