"""Scale-out: the infer subflow on a local Dask cluster (prefect-dask), including a worker killed mid-run."""
from __future__ import annotations

import os
import signal
import threading
import time

import pyarrow.parquet as pq
import pytest

pytest.importorskip("prefect_dask")
psutil = pytest.importorskip("psutil")

from flows.infer import infer_flow  # noqa: E402
from helios.models.config import ModelConfig  # noqa: E402
from helios.models import load_model  # noqa: E402
from tasks.infer.config import InferConfig  # noqa: E402
from tasks.infer.model_ref import make_model_ref  # noqa: E402
from flows.runners import make_task_runner  # noqa: E402
from tasks.infer.scan import scan_input  # noqa: E402
from tasks.prepare.export import export_onnx  # noqa: E402


def write_pngs(root, n):
    import io

    import numpy as np
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(buf, format="PNG")
        (root / f"{i:05d}.png").write_bytes(buf.getvalue())


def children_whose_command(matches, recursive: bool = False) -> list:
    """This process's children whose command line satisfies ``matches``. A child may exit between listing and
    reading its command line (a helper process, or a worker being replaced); it is skipped rather than ending the
    search."""
    found = []
    for p in psutil.Process().children(recursive=recursive):
        try:
            if matches(" ".join(p.cmdline())):
                found.append(p)
        except psutil.Error:
            continue
    return found


def dask_workers() -> list:
    """Worker processes of the local cluster: children started by the nannies with multiprocessing spawn."""
    return children_whose_command(lambda command: "spawn_main" in command)


def test_dask_runner_loads_the_model_once_per_worker_and_survives_a_killed_worker(prefect_harness, tmp_path):
    onnx = export_onnx(load_model(ModelConfig(name="mnist-cnn")), tmp_path / "onnx", 17)
    root, out = tmp_path / "in", tmp_path / "run"
    write_pngs(root, 2400)
    scan = scan_input(str(root), out)
    ref = make_model_ref(ModelConfig(name="mnist-cnn"), onnx, intra_op_threads=1)
    cfg = InferConfig(runner="dask", workers=2, shard_size=100, batch_size=16)
    killed = []

    def kill_one_worker():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            shards = list((out / "shards").glob("*.parquet")) if (out / "shards").exists() else []
            workers = dask_workers()
            if len(shards) >= 3 and workers:
                try:
                    os.kill(workers[0].pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(workers[0].pid)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    result = infer_flow.with_options(task_runner=make_task_runner(cfg))(cfg, ref, str(scan.manifest_path), str(out), {})
    killer.join()
    table = pq.read_table(result.predictions_path)
    assert table.num_rows == 2400 and set(table["status"].to_pylist()) == {"ok"}
    assert len(set(table["path"].to_pylist())) == 2400
    assert killed, "no worker was killed: the run ended too soon"
    # one session per worker process (the replacement worker loads its own), never one per shard
    assert result.model_loads == result.worker_processes < 24
    assert result.worker_processes >= 2


def ray_shard_workers() -> list:
    """Ray worker processes running a shard right now: Ray titles them after the task (``ray::infer-shard``)."""
    return children_whose_command(lambda command: command.startswith("ray::infer-shard"), recursive=True)


def test_ray_runner_completes_with_every_row_once_when_a_worker_is_killed(prefect_harness, tmp_path, mnist_ref):
    """A real local Ray cluster (2 CPUs). Ray re-runs a task whose worker died (its default ``max_retries``), so
    the killed shard is recomputed under its own name and committed once; the run needs no rerun."""
    pytest.importorskip("prefect_ray")
    root, out = tmp_path / "in", tmp_path / "run"
    write_pngs(root, 2400)
    scan = scan_input(str(root), out)
    cfg = InferConfig(runner="ray", workers=2, shard_size=200, batch_size=4)
    killed = []

    def kill_a_busy_worker():
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not killed:
            shards = list((out / "shards").glob("*.parquet")) if (out / "shards").exists() else []
            busy = ray_shard_workers() if shards else []
            if busy:
                try:
                    os.kill(busy[0].pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(busy[0].pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    result = infer_flow.with_options(task_runner=make_task_runner(cfg))(cfg, mnist_ref, str(scan.manifest_path),
                                                                        str(out), {})
    killer.join()
    table = pq.read_table(result.predictions_path)
    assert killed, "no Ray worker was seen running a shard"
    assert table.num_rows == len(set(table["path"].to_pylist())) == 2400
    assert set(table["status"].to_pylist()) == {"ok"}
    assert result.worker_processes >= 2 and result.model_loads == result.worker_processes
