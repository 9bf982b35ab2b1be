"""The infer subflow on the real Prefect test harness: contract, incremental reruns, --full, and kill -9 resume."""
from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.infer import infer_flow
from helios.models.config import ModelConfig
from helios.models import load_model
from tasks.infer.config import InferConfig
from tasks.infer.model_ref import make_model_ref
from tasks.infer.scan import scan_input
from tasks.prepare.export import export_onnx

COLUMNS = ["path", "size_bytes", "content_hash", "status", "error", "flag", "label", "confidence", "infer_label",
           "infer_confidence", "final_stage"]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return export_onnx(load_model(ModelConfig(name="mnist-cnn")), tmp_path_factory.mktemp("onnx"), 17)


def write_pngs(root: Path, n: int, start: int = 0) -> None:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(buf, format="PNG")
        (root / f"{i:05d}.png").write_bytes(buf.getvalue())


def run(root: Path, out: Path, onnx: Path, **cfg):
    scan = scan_input(str(root), out)
    ref = make_model_ref(ModelConfig(name="mnist-cnn"), onnx, intra_op_threads=1)
    return infer_flow(InferConfig(**{"shard_size": 100, "batch_size": 32, **cfg}), ref, str(scan.manifest_path),
                      str(out), {})


def test_contract_incremental_and_full(prefect_harness, tmp_path, onnx_path):
    root, out = tmp_path / "in", tmp_path / "run"
    write_pngs(root, 250)
    (root / "bad.png").write_bytes(b"not a png")
    first = run(root, out, onnx_path)
    table = pq.read_table(first.predictions_path)
    assert table.column_names == COLUMNS and table.num_rows == 251
    assert (out / "manifest.parquet").is_file()
    assert first.counts == {"files": 251, "ok": 250, "error": 1, "flagged": 0, "reused": 0,
                            "worker_deaths": 0}
    assert first.errors_by_reason == {"not an image": 1}
    assert [p["files"] for p in first.throughput][-1] == 251 and len(first.throughput) == 3

    write_pngs(root, 1, start=1000)  # one new file
    (root / "00007.png").write_bytes((root / "00008.png").read_bytes())  # one changed file (now a duplicate)
    second = run(root, out, onnx_path)
    assert second.counts["files"] == 252 and second.counts["reused"] == 251  # 00007 reuses 00008's result
    assert [p["files"] for p in second.throughput] == [1]
    rows = {r["path"]: r for r in pq.read_table(second.predictions_path).to_pylist()}
    assert rows["00007.png"]["label"] == rows["00008.png"]["label"]

    third = run(root, out, onnx_path, full=True)
    assert third.counts["reused"] == 0 and [p["files"] for p in third.throughput][-1] == 251


RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from helios.models.config import ModelConfig
    from tasks.infer.config import InferConfig
    from tasks.infer.model_ref import make_model_ref
    from tasks.infer.scan import scan_input
    from flows.infer import infer_flow

    root, out, onnx = sys.argv[1:4]
    scan = scan_input(root, Path(out))
    ref = make_model_ref(ModelConfig(name="mnist-cnn"), onnx, intra_op_threads=1)
    print(infer_flow(InferConfig(shard_size=100, batch_size=16), ref, str(scan.manifest_path), out, {}).model_dump_json())
""")


def committed(out: Path) -> int:
    if not (out / "index.sqlite").is_file():
        return 0
    try:
        with sqlite3.connect(out / "index.sqlite", timeout=1) as db:
            return db.execute("SELECT count(*) FROM shards").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("kill_after_shards", [1, 4])
def test_kill_9_then_rerun_loses_and_duplicates_nothing(prefect_harness, tmp_path, onnx_path, kill_after_shards):
    from prefect.settings import PREFECT_API_URL

    root, out = tmp_path / "in", tmp_path / "run"
    write_pngs(root, 1200)
    script = tmp_path / "run_infer.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(Path.cwd())}
    args = [sys.executable, str(script), str(root), str(out), str(onnx_path)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while committed(out) < kill_after_shards and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed: make the corpus bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = committed(out)
    assert 1 <= killed_at < 12

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pq.read_table(out / "predictions.parquet")
    paths = table["path"].to_pylist()
    assert len(paths) == len(set(paths)) == 1200
    assert set(table["status"].to_pylist()) == {"ok"}
    result = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert result["counts"]["reused"] >= killed_at * 100


def test_metrics_are_scraped_during_the_run_and_progress_is_shown(prefect_harness, tmp_path, onnx_path, capsys):
    import socket
    import threading
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root, out = tmp_path / "in", tmp_path / "run"
    write_pngs(root, 400)
    scraped, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode())
            except OSError:
                pass
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    result = run(root, out, onnx_path, metrics_port=port, progress=True)
    stop.set()
    poller.join()
    assert result.counts["ok"] == 400
    assert scraped, "the metrics endpoint was never reachable during the run"
    assert "helios_files_processed_total" in scraped[-1] and "helios_inference_batch_seconds_bucket" in scraped[-1]
    assert "400/400" in capsys.readouterr().out
