"""Shard worker processes: a real shard in a spawned process, a real SIGKILL, the replacement, and failures."""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import pyarrow.parquet as pq
import pytest

from tasks.infer.plan import plan_shards
from tasks.infer.scan import read_manifest, scan_input
from tasks.infer.shard import ShardSettings
from tasks.infer.workers import ShardWorkers, WorkerDied, death_reason


def digit_shards(root, run, make_digits, mnist_ref, n: int, shard_size: int):
    make_digits(root, n)
    scan = scan_input(str(root), run)
    manifest, src = read_manifest(scan.manifest_path)
    return plan_shards(manifest, src, set(), mnist_ref.identity, shard_size, run)


def kill_when_busy(status_dir, shard_id: str, killed: list) -> None:
    """SIGKILL the worker whose status file names ``shard_id`` (it is running that shard right now)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for status in status_dir.glob("*"):
            try:
                busy = status.read_text() == shard_id
            except FileNotFoundError:
                continue
            if busy:
                os.kill(int(status.name), signal.SIGKILL)
                killed.append(int(status.name))
                return
        time.sleep(0.005)


def test_death_reason_names_the_signal_or_the_exit_code():
    assert death_reason(-9) == "worker died: SIGKILL (signal 9)"
    assert death_reason(-11) == "worker died: SIGSEGV (signal 11)"
    assert death_reason(3) == "worker died: exit code 3"


def test_a_killed_worker_fails_its_shard_and_is_replaced(tmp_path, make_digits, mnist_ref):
    run = tmp_path / "run"
    first, second = digit_shards(tmp_path / "in", run, make_digits, mnist_ref, 1200, 600)
    settings = ShardSettings(batch_size=1, runners=1)  # one image a batch: a slow shard, easy to catch mid-way
    killed: list[int] = []
    with ShardWorkers(1, run / "workers") as workers:
        killer = threading.Thread(target=kill_when_busy, args=(run / "workers", first.shard_id, killed))
        killer.start()
        with pytest.raises(WorkerDied, match=r"worker died: SIGKILL \(signal 9\)"):
            workers.run(first, mnist_ref, settings)
        killer.join()
        outcome = workers.run(second, mnist_ref, settings)  # the replacement worker runs the next shard
        assert workers.deaths == [f"worker died: SIGKILL (signal 9) (pid {killed[0]}, shard {first.shard_id})"]
        assert outcome.pid != killed[0] and outcome.ok == 600 and outcome.loaded_model
        assert not list((run / "workers").iterdir())  # no status file left behind
    assert not os.path.exists(first.out_path) and pq.read_table(second.out_path).num_rows == 600


def test_an_idle_worker_found_dead_is_counted_and_replaced(tmp_path, make_digits, mnist_ref):
    [spec] = digit_shards(tmp_path / "in", tmp_path / "run", make_digits, mnist_ref, 20, 100)
    with ShardWorkers(1) as workers:
        [worker] = list(workers._live)
        worker.process.kill()
        worker.process.join()
        assert workers.run(spec, mnist_ref, ShardSettings(batch_size=8)).ok == 20
        assert workers.deaths == [f"worker died: SIGKILL (signal 9) (pid {worker.process.pid}, idle)"]


def test_a_shard_error_in_the_worker_is_raised_with_its_own_type(tmp_path, make_digits, mnist_ref):
    [spec] = digit_shards(tmp_path / "in", tmp_path / "run", make_digits, mnist_ref, 20, 100)
    missing = dataclasses.replace(spec, todo_path=str(tmp_path / "gone.parquet"))
    with ShardWorkers(1) as workers:
        with pytest.raises(FileNotFoundError):
            workers.run(missing, mnist_ref, ShardSettings(batch_size=8))
        assert workers.run(spec, mnist_ref, ShardSettings(batch_size=8)).ok == 20  # the same worker goes on
        assert workers.deaths == []
