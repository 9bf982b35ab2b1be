"""The helios command as a user runs it: real subprocesses, exit codes, one-line errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HELIOS = [sys.executable, "-m", "helios.cli"]


def helios(*args, cwd=None, timeout=120):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*HELIOS, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


USAGE_ERRORS = [
    (["run", "--input", "/no/such/dir"], "input directory /no/such/dir does not exist"),
    (["run", "--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["run", "--model", "models:/mnist-cnn/latest"], "use models:/NAME@ALIAS (e.g. models:/mnist-cnn@champion)"),
    (["run", "--model", "models:/mnist-cnn@champion"], "--model models:/mnist-cnn@champion: no MLflow store at"),
    (["run", "--set", "infer.bogus=1"], "unknown setting 'infer.bogus'"),
    (["run", "--set", "refine.tta_merge=median"], "refine.tta_merge='median' is not allowed"),
    (["run", "--config", "/no/such.yaml"], "config file /no/such.yaml does not exist"),
    (["demo-data", "--kind", "audio", "--out", "x"], "unknown demo kind 'audio'"),
    (["demo-data", "--corrupt", "lava", "--out", "x"], "unknown corruption(s) lava"),
    (["run", "--set", "model.std=[0]"], "std [0.0] must be positive numbers"),
    (["run", "--model", "mynet:build"], "--set 'model.labels=[cat,dog]'"),  # brackets printed, not taken as markup
    (["optimize", "--out", "o", "--sample", "/no/such"], "sample directory /no/such does not exist"),
    (["optimize", "--out", "o", "--labels", "l.csv"], "--labels needs --sample"),
    (["optimize", "--out", "o", "--set", "optimize.calibration=median"], "optimize.calibration='median' is not allowed"),
]


@pytest.fixture(scope="module")
def usage_answers(tmp_path_factory) -> list[subprocess.CompletedProcess]:
    """Every command of USAGE_ERRORS run as its own process in its own working directory, four at a time: none
    depends on another, so they need not queue one behind the other (on 2 cores: about half the time)."""
    from concurrent.futures import ThreadPoolExecutor

    cwds = [tmp_path_factory.mktemp("usage") for _ in USAGE_ERRORS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda case: helios(*case[0][0], cwd=case[1]), zip(USAGE_ERRORS, cwds)))


@pytest.mark.parametrize("args, fragment", USAGE_ERRORS)
def test_usage_errors_are_one_line_with_exit_code_2(usage_answers, args, fragment):
    result = usage_answers[USAGE_ERRORS.index((args, fragment))]
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_hardware_json_is_valid_json():
    result = helios("hardware", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["profile"]["cpu"]["logical_cores"] >= 1
    assert "CPUExecutionProvider" in data["recommendation"]["providers"]


def test_hardware_table_is_readable():
    result = helios("hardware")
    assert result.returncode == 0 and "CPU" in result.stdout


def test_demo_data_writes_files_and_labels(tmp_path):
    result = helios("demo-data", "--kind", "mnist", "--n", "30", "--corrupt", "fog,rotate", "--out", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    pngs = sorted((tmp_path / "d" / "files").rglob("*.png"))
    lines = (tmp_path / "d" / "labels.csv").read_text().splitlines()
    assert len(pngs) == 30 and len(lines) == 31 and lines[0] == "path,label,corruption"
    assert {p.parent.name for p in pngs} == {"clean", "fog", "rotate"}


FAST_OPTIMIZE = ["--set", "optimize.eval_samples=64", "--set", "optimize.calibration_samples=32",
                 "--set", "optimize.latency_runs=5", "--set", "optimize.rounds=1", "--set", "optimize.batch_sizes=[1,32]"]


def test_optimize_takes_the_config_and_tracks_in_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    result = helios("optimize", "--model", "mnist-cnn", "--out", "opt", "--set", "optimize.variants=[fp32,int8-static]",
                    "--set", "optimize.calibration=entropy", *FAST_OPTIMIZE, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "opt" / "optimize.json").read_text())
    assert [v["name"] for v in table["variants"]] == ["fp32", "int8-static"]
    assert all(v["accuracy"] is not None for v in table["variants"])  # the demo sample brings its labels
    recipe = json.loads((tmp_path / "opt" / "int8-static.json").read_text())["quantization"]
    assert recipe["calibration"]["method"] == "Entropy" and recipe["pre_process"].startswith("quant_pre_process (")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("helios").experiment_id
    runs = client.search_runs([exp])
    parent = next(r for r in runs if r.data.tags.get("helios.command") == "optimize")
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {r.data.tags["helios.variant"] for r in nested} == {"fp32", "int8-static"}
    assert parent.data.params["config.optimize.calibration"] == "entropy" and parent.info.status == "FINISHED"
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    assert champion.tags["helios.variant"] == table["selected"]
    assert f"run {parent.info.run_id}" in result.stdout and not (tmp_path / "mlruns").exists()


def test_optimize_on_own_sample_with_labels_and_tracking_off(tmp_path):
    made = helios("demo-data", "--kind", "mnist", "--n", "64", "--out", "d", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = helios("optimize", "--sample", "d/files", "--labels", "d/labels.csv", "--out", "opt",
                    "--set", "optimize.variants=[fp32]", "--set", "tracking.enabled=false", *FAST_OPTIMIZE,
                    cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    fp32 = json.loads((tmp_path / "opt" / "optimize.json").read_text())["variants"][0]
    assert fp32["accuracy"] > 0.9 and not (tmp_path / "mlflow.db").exists()


def test_optimize_stops_on_a_failed_parity_gate_with_one_line(tmp_path):
    (tmp_path / "drifting.py").write_text(
        "import torch\n"
        "from helios.models.mnist_cnn import build_network\n"
        "class Drift(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); torch.manual_seed(0); self.net = build_network()\n"
        "    def forward(self, x):\n"
        "        out = self.net(x)\n"
        "        return out + 0.5 if torch.onnx.is_in_onnx_export() else out\n"
        "def build():\n"
        "    return Drift()\n")
    result = helios("optimize", "--model", "drifting:build", "--set", "model.labels=[0,1,2,3,4,5,6,7,8,9]",
                    "--set", "tracking.enabled=false", "--out", "opt", *FAST_OPTIMIZE, cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "max |Δlogit| 0.5 > prepare.max_abs_logit_diff=0.001" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
