"""A hand-made run: the summary the flow assembles, plus small manifest and predictions parquet files."""
from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest

LABELS = tuple(str(d) for d in range(10))

SUMMARY = {
    "hardware": {
        "cpu": {"model": "AMD EPYC", "cores": 2, "flags": ["avx2"]},
        "memory": {"total_gb": 24.0},
        "gpus": [],
        "hardware_class": "cpu-avx2",
        "unavailable": {"cuda": "no NVIDIA driver"},
    },
    "recommendation": {"provider": "CPUExecutionProvider", "threads": 2, "precision": "int8"},
    "config": {"model": {"name": "mnist-cnn"}, "infer": {"batch_size": 64}, "report": {"html": True}},
    "counts": {"files": 8, "ok": 6, "error": 2, "flagged": 1},
    "stages": {"detect": 0.2, "prepare": 1.1, "optimize": 6.5, "infer": 3.0, "refine": 2.2, "review": 1.4, "report": 0.8},
    "accuracy": {"infer": 0.83, "refine": 0.9, "review": 0.9},
    "variants": [
        {"name": "fp32", "path": "models/fp32.onnx", "size_bytes": 400_000, "latency_p50_ms": 4.0, "latency_p95_ms": 5.0,
         "latency_p99_ms": 6.0, "throughput_per_s": 900.0, "best_batch": 64, "peak_mem_mb": 120.0, "agreement": 1.0,
         "selected": False, "reason": "slower than int8 at equal agreement", "providers": ["CPUExecutionProvider"]},
        {"name": "int8", "path": "models/int8.onnx", "size_bytes": 110_000, "latency_p50_ms": 2.0, "latency_p95_ms": 2.6,
         "latency_p99_ms": 3.1, "throughput_per_s": 1700.0, "best_batch": 128, "peak_mem_mb": 80.0, "agreement": 0.995,
         "selected": True, "reason": "fastest within the 0.99 agreement floor", "providers": ["CPUExecutionProvider"]},
        {"name": "int8-<static>", "path": "models/int8s.onnx", "size_bytes": 105_000, "latency_p50_ms": 2.5,
         "latency_p95_ms": 3.0, "latency_p99_ms": 3.5, "throughput_per_s": 1500.0, "best_batch": 128, "peak_mem_mb": 82.0,
         "agreement": 0.97, "selected": False, "reason": "agreement 0.97 < 0.99", "providers": ["CPUExecutionProvider"]},
    ],
    "throughput": [{"t": 1.0, "files": 3}, {"t": 2.0, "files": 6}, {"t": 3.0, "files": 8}],
    "refine": {
        "status": "ok", "routed": 3,
        "methods": {
            "bn-adapt": {"touched": 3, "changed": 1, "accuracy_before": 0.83, "accuracy_after": 0.87, "forward_passes": 3,
                         "backward_passes": 0, "seconds": 0.4, "multiplier": 1.0},
            "tta": {"touched": 3, "changed": 1, "accuracy_before": 0.83, "accuracy_after": 0.9, "forward_passes": 24,
                    "backward_passes": 0, "seconds": 1.2, "multiplier": 8.0},
        },
        "per_corruption": {"fog": {"none": 0.3, "bn-adapt": 0.2, "tta": 0.15},
                           "rotate": {"none": 0.25, "bn-adapt": 0.22, "tta": 0.1}},
    },
    "review": {
        "status": "ok", "reviewed": 2, "skipped": 0, "unreviewed": 1, "cost_usd": 0.0123,
        "per_model": {"openrouter/anthropic/claude-3.5-sonnet": {"requests": 2, "input_tokens": 1500,
                                                                 "output_tokens": 120, "cost_usd": 0.0123}},
        "agreement_rate": 0.5, "verdicts": {"agree": 1, "disagree": 1, "unsure": 0},
    },
}

FIGURES = {"variants", "stages", "throughput", "confidence", "refine_gains", "refine_per_corruption", "review_verdicts"}


def manifest_frame() -> pd.DataFrame:
    paths = [f"digits/{i}.png" for i in range(6)] + ["odd/<script>alert(1)</script>.png", "odd/new\nline.png"]
    return pd.DataFrame({"path": paths, "size_bytes": [120 + i for i in range(8)],
                         "content_hash": [f"sha256:{i:064x}" for i in range(8)]})


def predictions_frame() -> pd.DataFrame:
    manifest = manifest_frame()
    ok = [True] * 6 + [False, False]
    return manifest.assign(
        status=["ok" if o else "error" for o in ok],
        error=[None] * 6 + ["decode: cannot identify image <b>", "decode: truncated file\nsecond line"],
        label=["0", "1", "2", "3", "4", "5", None, None],
        confidence=[0.99, 0.95, 0.7, 0.92, 0.6, 0.97, None, None],
        final_stage=["infer", "infer", "refine", "infer", "review", "infer", "error", "error"],
        infer_label=["0", "1", "7", "3", "4", "5", None, None],
        infer_confidence=[0.99, 0.95, 0.4, 0.92, 0.35, 0.97, None, None],
        flag=[False, False, False, False, True, False, False, False],
    )


@pytest.fixture
def labels() -> tuple[str, ...]:
    return LABELS


@pytest.fixture
def expected_figures() -> set[str]:
    return set(FIGURES)


@pytest.fixture
def make_predictions():
    """A factory for fresh, consistent predictions frames that a test then breaks on purpose."""
    return predictions_frame


@pytest.fixture
def summary() -> dict:
    return copy.deepcopy(SUMMARY)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory holding a consistent manifest and predictions (6 ok, 2 decode errors)."""
    manifest_frame().to_parquet(tmp_path / "manifest.parquet", index=False)
    predictions_frame().to_parquet(tmp_path / "predictions.parquet", index=False)
    return tmp_path

