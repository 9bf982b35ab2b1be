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


@pytest.mark.parametrize("args, fragment", [
    (["run", "--input", "/no/such/dir"], "input directory /no/such/dir does not exist"),
    (["run", "--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["run", "--set", "infer.bogus=1"], "unknown setting 'infer.bogus'"),
    (["run", "--set", "refine.tta_merge=median"], "refine.tta_merge='median' is not allowed"),
    (["run", "--config", "/no/such.yaml"], "config file /no/such.yaml does not exist"),
    (["demo-data", "--kind", "audio", "--out", "x"], "unknown demo kind 'audio'"),
    (["demo-data", "--corrupt", "lava", "--out", "x"], "unknown corruption(s) lava"),
])
def test_usage_errors_are_one_line_with_exit_code_2(tmp_path, args, fragment):
    result = helios(*args, cwd=tmp_path)
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
