"""Quality of the quantized variants, fusion of a real (tiny) transformer, and the sensitivity retry."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tasks.optimize.config import OptimizeConfig
from tasks.optimize.core import optimize_model
from tasks.optimize.quantize import head_nodes

FAST = dict(eval_samples=48, calibration_samples=32, latency_runs=5, batch_sizes=(1, 16))


def test_head_is_the_last_weight_layer_before_each_output(mnist):
    _, prepared = mnist
    model = onnx.load(str(prepared.onnx_path))
    last_gemm = [n.name for n in model.graph.node if n.op_type == "Gemm"][-1]
    assert head_nodes(model) == [last_gemm]


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_calibrated_on_real_digits_keeps_top1(mnist, digits, avx2, tmp_path, method):
    adapter, prepared = mnist
    cfg = OptimizeConfig(variants=("fp32", "int8-static"), calibration=method, **FAST)
    result = optimize_model(cfg, adapter, prepared, digits[0], tmp_path, *avx2)
    static = next(v for v in result.variants if v.name == "int8-static")
    assert static.error is None and static.agreement >= 0.97
    assert static.size_bytes < 0.4 * prepared.onnx_path.stat().st_size
    ops = {n.op_type for n in onnx.load(str(static.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_static_quantizer_takes_a_relative_model_path(mnist, digits, tmp_path, monkeypatch):
    """The quantizer pre-processes in a temp working directory: a relative path must not resolve there."""
    from tasks.optimize.quantize import quantize_static_model

    adapter, prepared = mnist
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(prepared.onnx_path.read_bytes())
    monkeypatch.chdir(tmp_path)
    feeds = [adapter.collate([adapter.preprocess(p.read_bytes()) for p in digits[0][:16]])]
    recipe = quantize_static_model(Path("m/model.onnx"), Path("m/int8.onnx"), feeds, "minmax",
                                   {"per_channel": True}, None, [], 99.999)
    assert recipe["quantization"]["pre_process"].startswith("quant_pre_process (symbolic shape inference")
    assert (tmp_path / "m" / "int8.onnx").is_file()


def test_transformer_is_fused_then_quantized_within_the_cosine_budget(tiny_bert, texts, avx2, tmp_path):
    from tasks.prepare.config import PrepareConfig
    from tasks.prepare.core import prepare_model

    prepared = prepare_model(PrepareConfig(), tiny_bert, texts, tmp_path / "prep")
    cfg = OptimizeConfig(variants=("fp32", "fp32-fused", "int8-dynamic"), min_cosine=0.98, **FAST)
    result = optimize_model(cfg, tiny_bert, prepared, texts, tmp_path, *avx2)
    by_name = {v.name: v for v in result.variants}
    fused = json.loads((tmp_path / "fp32-fused.json").read_text())["fusion"]
    assert fused["fused_operators"]["Attention"] == 2 and fused["graph"] == "re-exported with eager attention"
    assert by_name["fp32-fused"].cosine > 0.9999 and by_name["fp32-fused"].agreement == 1.0
    int8 = by_name["int8-dynamic"]
    assert int8.cosine >= 0.98 and int8.min_cosine <= int8.cosine
    recipe = json.loads((tmp_path / "int8-dynamic.json").read_text())
    assert recipe["derived_from"] == "fp32-fused.onnx"  # quantized after fusion
    assert recipe["quantization"]["op_types"] == ["MatMul", "Attention"]
    ops = {n.op_type for n in onnx.load(str(int8.path)).graph.node}
    assert "DynamicQuantizeMatMul" in ops or "MatMulInteger" in ops


def test_missing_the_budget_retries_with_sensitive_matmuls_in_fp32(tiny_bert, texts, avx2, tmp_path):
    from tasks.prepare.config import PrepareConfig
    from tasks.prepare.core import prepare_model

    prepared = prepare_model(PrepareConfig(), tiny_bert, texts, tmp_path / "prep")
    cfg = OptimizeConfig(variants=("fp32", "int8-dynamic"), min_cosine=0.999999, int8_retries=2, **FAST)
    result = optimize_model(cfg, tiny_bert, prepared, texts, tmp_path, *avx2)
    attempts = json.loads((tmp_path / "int8-dynamic.json").read_text())["quantization"]["attempts"]
    assert len(attempts) == 3 and attempts[0]["excluded"] < attempts[1]["excluded"] < attempts[2]["excluded"]
    assert np.diff([a["cosine"] for a in attempts]).min() > -0.01  # keeping layers in fp32 does not make it worse
    assert result.selected.name == "fp32" and "quality below budget" in result.variants[1].reason
