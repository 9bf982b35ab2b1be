"""`helios run` with default settings over a folder holding what real folders hold: exit 0, nothing lost."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

BAD = {  # file -> the error kind its row must carry
    "pipe": "not a regular file", "passwd-link": "symlink leaves the input root", "loop-a": "broken symlink",
    "loop-b": "broken symlink", "empty.png": "empty file", "truncated.png": "corrupt image", "notes.txt": "not an image",
}


def hostile_folder(root) -> list[str]:
    root.mkdir()
    rng = np.random.default_rng(0)
    good = [f"digit{i}.png" for i in range(6)]
    for name in good:
        Image.fromarray((rng.random((28, 28)) * 255).astype("uint8")).save(root / name)
    os.mkfifo(root / "pipe")
    os.symlink("/etc/passwd", root / "passwd-link")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    (root / "empty.png").write_bytes(b"")
    png = (root / good[0]).read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "notes.txt").write_text("not an image")
    return good


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_hostile_folder_exits_0_with_one_error_row_per_bad_file(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    good = hostile_folder(tmp_path / "in")
    # the session's Prefect test server (no temporary server to start per run: tests/helios/test_quickstart.py has that)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": PREFECT_API_URL.value()}
    env.pop("OPENROUTER_API_KEY", None)
    result = subprocess.run([sys.executable, "-m", "helios.cli", "run", "--input", str(tmp_path / "in"),
                             "--out", str(tmp_path / "work" / "run")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = pd.read_parquet(tmp_path / "work" / "run" / "predictions.parquet").set_index("path")
    assert sorted(rows.index) == sorted(good + list(BAD))  # one row per file, none lost, none twice
    assert (rows.loc[good, "status"] == "ok").all()
    for name, kind in BAD.items():
        assert rows.loc[name, "status"] == "error" and rows.loc[name, "error"].startswith(kind), (name, rows.loc[name, "error"])
    report = json.loads((tmp_path / "work" / "run" / "report.json").read_text())
    counted = {e["kind"]: e["count"] for e in report["errors"]}
    assert counted == {"not a regular file": 1, "symlink leaves the input root": 1, "broken symlink": 2,
                       "empty file": 1, "corrupt image": 1, "not an image": 1}
    assert report["validation"]["success"] is True
