"""Shard workers: local shards in processes of their own, so a native crash costs one shard attempt, not the run.

A worker process runs one shard at a time (``infer_shard``; its engine is built once per process). When it dies —
a segfault in a runtime, the OOM killer's SIGKILL — the shard it ran raises ``WorkerDied`` and a fresh process
takes the dead one's place; the caller retries the shard and turns it into error rows if it keeps dying. Workers
are spawned, not forked: the flow process runs threads (Prefect's event loop, the metrics server) that a fork
would copy in the middle of holding their locks.

While a worker runs a shard, ``status_dir/<pid>`` holds the shard id: which process to look at (or kill) for which
shard. The flow process writes and removes these files; a worker never writes anything but its shard file.
"""
from __future__ import annotations

import logging
import multiprocessing
import pickle
import queue
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from tasks.infer.model_ref import ModelRef
from tasks.infer.shard import ShardOutcome, ShardSettings, ShardSpec, infer_shard

log = logging.getLogger(__name__)
JOIN_TIMEOUT_S = 5.0


class WorkerDied(RuntimeError):
    """The worker process running a shard ended without answering: killed by a signal, or it exited."""


def death_reason(exitcode: int | None) -> str:
    """``worker died: SIGKILL (signal 9)`` for a negative exit code (the signal), else the exit code."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        return f"worker died: {name} (signal {-exitcode})"
    return f"worker died: exit code {exitcode}"


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it crosses the pipe intact, else a RuntimeError that keeps its type name and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # any pickling failure: the message still has to reach the flow
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(conn: Connection) -> None:
    """Worker loop: run each shard sent on ``conn`` and answer its outcome or its exception; stop on None or when
    the flow process is gone (its end of the pipe closed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the flow, which then stops its workers
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            answer = ("ok", infer_shard(*job))
        except Exception as exc:  # a shard's own failure goes back to the flow, which retries it
            answer = ("error", _picklable(exc))
        try:
            conn.send(answer)
        except OSError:  # the flow process is gone (kill -9): its rerun recomputes this shard
            return


@dataclass(eq=False)  # hashed by identity: the pool keeps a set of its live workers
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection

    @classmethod
    def start(cls, ctx) -> "_Worker":
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(theirs,), daemon=True, name="helios-shard-worker")
        process.start()
        theirs.close()
        return cls(process, ours)

    def call(self, job: tuple) -> ShardOutcome:
        """Send one shard, wait for its answer; WorkerDied if the process ends first."""
        try:
            self.conn.send(job)
            wait([self.conn, self.process.sentinel])
            kind, value = self.conn.recv()  # an answer sent just before dying is still read
        except (EOFError, OSError) as exc:
            self.process.join(JOIN_TIMEOUT_S)
            raise WorkerDied(death_reason(self.process.exitcode)) from exc
        if kind == "error":
            raise value
        return value

    def stop(self) -> None:
        """Ask an idle worker to exit; kill it if it does not (it may be stuck in native code)."""
        try:
            self.conn.send(None)
        except OSError:
            pass  # already dead
        self.process.join(JOIN_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(JOIN_TIMEOUT_S)
        self.conn.close()


class ShardWorkers:
    """``n`` shard worker processes; ``run`` borrows an idle one for a shard (blocking until one is free).

    A worker found dead, while running a shard or while idle, is counted in ``deaths`` and replaced at once.
    """

    def __init__(self, n: int, status_dir: Path | None = None):
        if n < 1:
            raise ValueError(f"ShardWorkers needs at least one worker, got n={n}")
        self.n, self.status_dir = n, status_dir
        self.deaths: list[str] = []  # "worker died: SIGKILL (signal 9) (pid 123, shard ab12)", one per death
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._live: set[_Worker] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> "ShardWorkers":
        if self.status_dir is not None:
            self.status_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(self.n):  # they boot (imports) while the flow plans its shards
            self._idle.put(self._start())
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            workers, self._live = list(self._live), set()
        for worker in workers:
            worker.stop()

    def _start(self) -> _Worker:
        worker = _Worker.start(self._ctx)
        with self._lock:
            self._live.add(worker)
        return worker

    def _replace(self, dead: _Worker, shard: str | None) -> _Worker:
        """Count ``dead`` (joined: its exit code is known) and start its successor."""
        dead.process.join(JOIN_TIMEOUT_S)
        where = f"pid {dead.process.pid}" + (f", shard {shard}" if shard else ", idle")
        reason = f"{death_reason(dead.process.exitcode)} ({where})"
        log.warning("%s; starting a new worker", reason)
        with self._lock:
            self.deaths.append(reason)
            self._live.discard(dead)
        dead.conn.close()
        return self._start()

    def run(self, spec: ShardSpec, ref: ModelRef, settings: ShardSettings) -> ShardOutcome:
        """``infer_shard(spec, ref, settings)`` in a worker process; WorkerDied if that process dies meanwhile."""
        worker = self._idle.get()
        if not worker.process.is_alive():
            worker = self._replace(worker, None)
        status = self.status_dir / str(worker.process.pid) if self.status_dir is not None else None
        if status is not None:
            status.write_text(spec.shard_id)
        try:
            return worker.call((spec, ref, settings))
        except WorkerDied:
            worker = self._replace(worker, spec.shard_id)
            raise
        finally:
            if status is not None:
                status.unlink(missing_ok=True)
            self._idle.put(worker)
