"""``benchmarks/gpu_check.py --dry-run`` on CPU: the plan and the CPU side pass, and the JSON says the GPU part was
skipped. A real subprocess run on small sizes (no mocks): corpus, export + parity, optimize, fp16 build, the
fallback detection, the infer engine over every file, PyTorch vs ONNX Runtime on the same inputs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES, TEXTS = 128, 16


def test_dry_run_checks_the_plan_and_the_cpu_side_and_skips_the_gpu(tmp_path):
    out = tmp_path / "tmp.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out), "--files", str(FILES),
         "--texts", str(TEXTS), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    data = json.loads(out.read_text())

    assert data["schema"] == "helios-gpu-check/1"
    assert data["mode"] == "dry-run" and data["finished"] is True and data["ok"] is True
    assert data["gpu_part"]["ran"] is False and data["gpu_part"]["skipped"] is True
    assert "--dry-run" in data["gpu_part"]["skipped_reason"]
    assert "GPU part: skipped" in proc.stdout

    plan = {c["name"]: c for c in data["plan"]["checks"]}
    assert set(plan) >= {"python_modules", "helios_api", "gpu_recommendation", "gpu_variants", "budget", "sizes",
                         "no_prefect_or_mlflow"}
    assert [name for name, c in plan.items() if not c["ok"]] == []
    assert data["plan"]["h200_recommendation"]["providers"][0] == "CUDAExecutionProvider"
    assert "fp16" in data["plan"]["h200_recommendation"]["precisions"]
    assert data["plan"]["h200_variants"]["mnist-cnn"]["build"] == ["fp32", "fp16"]
    assert data["plan"]["h200_variants"]["minilm"]["build"] == ["fp32", "fp32-fused", "fp16"]
    assert data["plan"]["budget"]["watchdog_s"] <= 480
    assert not [m for m in data["third_party_modules"] if m in ("prefect", "mlflow")]

    cpu = {c["name"]: c for c in data["cpu_checks"]}
    assert cpu["refine_torch_work_on_cpu"]["ok"] is True  # refine's torch work (issue 17): the CPU side of it
    assert data["refine"]["devices"] == ["cpu"] and data["refine"]["cpu"]["accuracy_after"] is not None
    for model in ("mnist-cnn", "minilm"):
        for check in ("export_parity", "fp16_build", "fallback_detection", "infer_engine", "ort_vs_torch_fp32"):
            assert cpu[f"{model}.{check}"]["ok"] is True, cpu.get(f"{model}.{check}")
    assert cpu["corpus"]["ok"] is True
    assert [p for p in data["phases"] if p["status"] != "ok"] == []

    mnist, text = data["results"]["mnist-cnn"], data["results"]["minilm"]
    assert mnist["infer"]["files_processed"] == FILES and mnist["infer"]["errors"] == 0
    assert mnist["infer"]["accuracy"] >= 0.9  # the built-in weights on real digits
    assert text["infer"]["files_processed"] == TEXTS and text["infer"]["errors"] == 0
    assert data["sizes_used"]["files_written"] == FILES and data["sizes_used"]["texts_written"] == TEXTS
    # nothing ran on a GPU: CPU sessions only, PyTorch on the CPU, no GPU memory figures
    assert mnist["infer"]["engine_session_providers"] == ["CPUExecutionProvider"]
    for res in (mnist, text):
        assert set(res["bare"]["torch"]) == {"fp32"}
        assert all(r["device"] == "cpu" and "gpu_memory" not in r for r in res["bare"]["torch"]["fp32"].values())
        assert all(r["providers"] == ["CPUExecutionProvider"] and r["io_binding"] is False
                   for per in res["bare"]["ort"].values() for r in per.values())
        # asking for CUDA here must be seen as a fallback, not taken at its word
        detection = res["fallback"]["detection"]
        assert detection["fell_back"] == ("CUDAExecutionProvider" not in detection["got"])
    assert data["ratios"]["mnist-cnn"]["ort_over_torch_best"] > 0
