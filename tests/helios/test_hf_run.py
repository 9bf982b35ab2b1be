"""`helios run` end to end on each kind of Hugging Face directory (tiny models built from configurations): every
stage runs — parity gate, variants and selection, infer, refine (BN-adapt/TENT only where there is BatchNorm),
review (label set from id2label), report, MLflow (the servable model registered) — and the console stays clean."""
from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # tests have no packages (importlib mode): make helpers importable

from hf_dirs import ANIMALS, TOPICS, resnet_dir, text_classifier_dir, vit_dir  # noqa: E402

from helios.data.demo import write_demo  # noqa: E402

FAST = ["--set", "optimize.eval_samples=16", "--set", "optimize.latency_runs=5", "--set", "optimize.rounds=1",
        "--set", "optimize.time_budget_s=5",
        "--set", "optimize.calibration_samples=16", "--set", "optimize.batch_sizes=[8]"]


def image_folder(root: Path, n: int = 24) -> Path:
    """JPEG, PNG and WebP files of mixed sizes and modes (a grey one, one with alpha)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        fmt = ("JPEG", "PNG", "WEBP")[i % 3]
        if i == 1:
            img = img.convert("L")
        if i == 2:
            img = img.convert("RGBA")
        img.save(root / f"img{i:02d}.{fmt.lower()}", format=fmt)
    return root


def helios_run(tmp_path: Path, model: Path, inputs: Path, labels: Path | None = None,
               extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``helios run`` in a subprocess against the session's Prefect test server (its URL in PREFECT_API_URL): no
    temporary server of its own to start and migrate, which cost a busy 2-core CI machine about a minute a run.
    (The temporary-server path of a bare ``helios run`` is tests/helios/test_quickstart.py's.)"""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("OPENROUTER_API_KEY", None)
    cmd = [sys.executable, "-m", "helios.cli", "run", "--input", str(inputs), "--model", str(model),
           "--out", str(tmp_path / "work" / "run"), *FAST, *extra] + (["--labels", str(labels)] if labels else [])
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def check_common(tmp_path: Path, result, labels: tuple[str, ...], n: int) -> tuple[pd.DataFrame, dict]:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    console = result.stdout + result.stderr
    for noise in ("LOAD REPORT", "UNEXPECTED", "Loading weights", "Writing model shards"):
        assert noise not in console, noise
    run = tmp_path / "work" / "run"
    rows = pd.read_parquet(run / "predictions.parquet")
    assert len(rows) == n and (rows["status"] == "ok").all()
    assert set(rows["label"]) <= set(labels)
    report = json.loads((run / "report.json").read_text())
    optimize = json.loads((run / "model" / "optimize.json").read_text())
    assert optimize["selected"] and len([v for v in optimize["variants"] if v.get("throughput_per_s")]) >= 2
    with sqlite3.connect(tmp_path / "work" / "mlflow.db") as db:
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (report["mlflow"]["run_id"],)).fetchall())
        versions = db.execute("select count(*) from model_versions").fetchone()[0]
    assert tags["helios.variant"] == optimize["selected"] and versions >= 1  # the servable model was logged
    return rows, report


@pytest.mark.parametrize("kind", ["text", "resnet", "vit"])
def test_helios_run_on_a_hugging_face_directory(prefect_harness, tmp_path, kind):
    if kind == "text":
        model = text_classifier_dir(tmp_path / "bert-topics")
        labels_csv = write_demo("text", 24, tmp_path / "texts")
        inputs, labels, truth = tmp_path / "texts" / "files", TOPICS, labels_csv
    else:
        model = (resnet_dir if kind == "resnet" else vit_dir)(tmp_path / f"{kind}-animals")
        inputs, labels, truth = image_folder(tmp_path / "images"), ANIMALS, None
    # the ViT run also asks for embeddings: the classifier's pooled features (hidden size 32) as a list column
    extra = ("--set", "infer.outputs=[label,embeddings]") if kind == "vit" else ()
    result = helios_run(tmp_path, model, inputs, truth, extra)
    rows, report = check_common(tmp_path, result, labels, 24)
    if kind == "vit":
        assert all(len(v) == 32 and np.isfinite(v).all() for v in rows["embedding"]), rows["embedding"]
        assert report["outputs"]["columns"] == {"embedding": 32}, report["outputs"]
    assert report["model"]["parity"]["top1_agreement"] == 1.0
    refine = report["refine"]
    assert refine["status"] == "done" or refine["status"].startswith("skipped"), refine
    if kind == "resnet":  # BatchNorm: BN-adapt and TENT ran (kept or reverted by their guards, never skipped)
        assert {"bn-adapt", "tent"} <= set(refine["methods"]) and refine["methods"]["bn-adapt"]["forward_passes"] > 0
    else:  # no BatchNorm: BN-adapt skips cleanly (LayerNorm adaptation is the refine stage's own business)
        assert "bn-adapt" not in refine.get("methods", {}), refine
    if kind == "text":
        assert report["accuracy"]["infer"] is not None
