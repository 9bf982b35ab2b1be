"""The README's promise: `helios run` with no arguments runs the whole pipeline on the demo, no servers."""
import json
import os
import subprocess
import sys

import pandas as pd


def test_helios_run_embedded_default(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    env.pop("OPENROUTER_API_KEY", None)
    result = subprocess.run([sys.executable, "-m", "helios.cli", "run"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "helios-work" / "run"
    predictions = pd.read_parquet(run / "predictions.parquet")
    report = json.loads((run / "report.json").read_text())
    assert len(predictions) == 2000 and predictions["path"].is_unique
    assert set(predictions["status"]) <= {"ok", "error"}
    assert {"path", "size_bytes", "content_hash", "status", "error", "label", "confidence", "final_stage"} <= set(predictions)
    assert report["counts"]["files"] == 2000
    assert list(report["stages"]) == ["detect", "prepare", "optimize", "infer", "refine", "review", "report"]
    # The demo is 1/6 clean digits and 5/6 MNIST-C corruptions (fog defeats the source model): refinement must gain.
    assert report["accuracy"]["infer"] > 0.7
    assert report["accuracy"]["refine"] >= report["accuracy"]["infer"] + 0.02, report["accuracy"]
    assert report["refine"]["status"] == "done" and report["refine"]["methods"]["tent"]["touched"] == 2000
    per_corruption = report["refine"]["per_corruption"]
    assert set(per_corruption) == {"clean", "shot_noise", "motion_blur", "rotate", "translate", "fog"}
    assert per_corruption["motion_blur"]["refine"] < per_corruption["motion_blur"]["infer"]
    # fog is a strong shift mixed into the set: it is split off and adapted on its own statistics
    assert report["refine"]["mixture"]["split"], report["refine"]["mixture"]
    assert per_corruption["fog"]["refine"] < per_corruption["fog"]["infer"] - 0.3
    assert per_corruption["clean"]["refine"] <= per_corruption["clean"]["infer"] + 0.005
    assert (tmp_path / "helios-work" / "mlflow.db").is_file()
    assert "Helios run complete" in result.stdout and "mlflow ui --backend-store-uri" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
