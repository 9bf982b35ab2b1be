"""Process isolation of local shards on the real Prefect harness: a worker killed with SIGKILL mid-shard costs one
shard attempt, not the run; a shard that keeps killing its worker becomes error rows, and a rerun heals it."""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pyarrow.parquet as pq

from flows.infer import infer_flow
from helios.catalog import RunCatalog
from tasks.infer.config import InferConfig
from tasks.infer.scan import scan_input
from tests.flows.test_infer_flow import write_pngs


class WorkerKiller(threading.Thread):
    """SIGKILLs the worker process running a shard, found by the run's status files (``workers/<pid>``: shard id).

    ``times`` kills, all of the first shard seen busy (so its retries are killed too) when ``same_shard``.
    """

    def __init__(self, run_dir, times: int = 1, same_shard: bool = False):
        super().__init__(daemon=True)
        self.status_dir, self.times, self.same_shard = RunCatalog(run_dir).workers, times, same_shard
        self.killed: list[tuple[int, str]] = []  # (pid, shard id)

    def busy(self) -> list[tuple[int, str]]:
        found = []
        for status in self.status_dir.glob("*") if self.status_dir.is_dir() else []:
            try:
                shard = status.read_text()
            except FileNotFoundError:
                continue
            if shard and int(status.name) not in {pid for pid, _ in self.killed}:
                found.append((int(status.name), shard))
        return found

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while len(self.killed) < self.times and time.monotonic() < deadline:
            for pid, shard in self.busy():
                if not self.same_shard or not self.killed or shard == self.killed[0][1]:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append((pid, shard))
                    break
            time.sleep(0.005)


def infer(root, out, ref, **cfg):
    scan = scan_input(str(root), out)
    cfg = InferConfig(**{"shard_size": 400, "batch_size": 2, "isolation": "process", **cfg})
    return infer_flow(cfg, ref, str(scan.manifest_path), str(out), {})


def committed_shards(out) -> list[str]:
    with sqlite3.connect(RunCatalog(out).index) as db:
        return [row[0] for row in db.execute("SELECT shard_id FROM shards")]


def test_a_worker_killed_mid_shard_costs_one_attempt_not_a_row(prefect_harness, tmp_path, mnist_ref):
    root, out = tmp_path / "in", tmp_path / "run"
    write_pngs(root, 1600)
    killer = WorkerKiller(out)
    killer.start()
    result = infer(root, out, mnist_ref)
    killer.join()
    assert killer.killed, "no worker was seen running a shard"
    [(pid, shard)] = killer.killed
    table = pq.read_table(result.predictions_path)
    paths = table["path"].to_pylist()
    assert len(paths) == len(set(paths)) == 1600 and set(table["status"].to_pylist()) == {"ok"}
    assert result.counts["worker_deaths"] == 1 and result.errors_by_reason == {}
    assert result.worker_deaths == [f"worker died: SIGKILL (signal 9) (pid {pid}, shard {shard})"]
    shards = committed_shards(out)
    assert len(shards) == len(set(shards)) == 4 and shard in shards  # the killed shard was retried, once committed
    assert not list(RunCatalog(out).workers.iterdir())


def test_a_shard_that_keeps_killing_its_worker_becomes_error_rows(prefect_harness, tmp_path, mnist_ref):
    root, out = tmp_path / "in", tmp_path / "run"
    write_pngs(root, 800)
    killer = WorkerKiller(out, times=2, same_shard=True)
    killer.start()
    result = infer(root, out, mnist_ref, shard_retries=1)
    killer.join()
    assert len(killer.killed) == 2 and killer.killed[0][1] == killer.killed[1][1]
    assert result.counts == {"files": 800, "ok": 400, "error": 400, "flagged": 0, "reused": 0, "worker_deaths": 2}
    errors = pq.read_table(result.predictions_path).to_pandas().query("status == 'error'")
    assert set(errors["error"]) == {"worker died: SIGKILL (signal 9) — retried 1 time"}
    assert result.errors_by_reason == {"worker died": 400}

    healed = infer(root, out, mnist_ref)  # error rows of a failed shard are not reused: the rerun infers them
    assert healed.counts == {"files": 800, "ok": 800, "error": 0, "flagged": 0, "reused": 400, "worker_deaths": 0}
