"""Selection on hand-made variant tables: fastest within budget, a reason for every variant."""
from pathlib import Path

import pytest

from tasks.optimize.result import VariantReport
from tasks.optimize.select import NoUsableVariant, select_variant


def row(name, tp, agreement=1.0, task="classifier", cosine=None, error=None, fell_back=False):
    return VariantReport(name, Path(f"{name}.onnx"), task, 1000, 1.0, 2.0, 3.0, tp, 8, 10.0, agreement=agreement,
                         cosine=cosine, error=error, fell_back=fell_back, providers=("CPUExecutionProvider",),
                         requested_providers=("CUDAExecutionProvider", "CPUExecutionProvider") if fell_back else ())


def pick(rows, min_agreement=0.995, min_cosine=0.99, min_gain=0.05):
    out = select_variant(rows, min_agreement, min_cosine, min_gain)
    assert sum(v.selected for v in out) == 1 and all(v.reason for v in out)
    return {v.name: v for v in out}


def test_fastest_variant_within_budget_wins_and_the_rest_say_why():
    out = pick([row("fp32", 100), row("int8-dynamic", 300, agreement=0.990), row("int8-static", 250, agreement=0.998)])
    assert out["int8-static"].selected
    assert "2.50x fp32" in out["int8-static"].reason
    assert "agreement 99.00%" in out["int8-dynamic"].reason and "min_agreement=99.50%" in out["int8-dynamic"].reason
    assert out["fp32"].reason.startswith("slower: 100.0/s vs 250.0/s for int8-static")


def test_lossy_variant_must_beat_lossless_by_min_gain():
    out = pick([row("fp32", 100), row("fp32-fused", 110), row("int8-dynamic", 113)])
    assert out["fp32-fused"].selected and "only +2.7% faster" in out["fp32-fused"].reason
    assert out["int8-dynamic"].reason.startswith("gain too small")
    assert pick([row("fp32", 100), row("int8-dynamic", 113)], min_gain=0.0)["int8-dynamic"].selected


def test_embedders_are_judged_by_mean_cosine():
    rows = [row("fp32", 10, task="embedder", cosine=1.0), row("int8-dynamic", 40, task="embedder", cosine=0.957),
            row("fp32-fused", 14, task="embedder", cosine=0.99999)]
    out = pick(rows)
    assert out["fp32-fused"].selected
    assert "mean cosine 0.9570 < optimize.min_cosine=0.99" in out["int8-dynamic"].reason
    assert pick(rows, min_cosine=0.95)["int8-dynamic"].selected


def test_failed_variant_loses_with_its_error_and_fallback_is_noted():
    out = pick([row("fp32", 100, fell_back=True), row("int8-static", None, error="RuntimeError: boom")])
    assert out["fp32"].selected and "ran on CPUExecutionProvider" in out["fp32"].reason
    assert out["int8-static"].reason == "failed: RuntimeError: boom"


def test_nothing_usable_raises():
    with pytest.raises(NoUsableVariant, match="fp32: failed: OSError"):
        select_variant([row("fp32", None, error="OSError: gone")], 0.995, 0.99, 0.05)
