"""One shard: read, verify, decode and collate files on a prefetch thread while the engine runs batches.

The bounded queue between the two is the backpressure: at most ``prefetch_batches`` collated batches wait in
memory, however large the shard. Results are keyed by content hash and written atomically to a fixed-name file.

``ShardSettings.runners`` threads take batches off the queue; the engine lets at most that many ONNX Runtime runs
proceed at once in the process, whichever shards they come from. With one-thread sessions and runners = cores,
every core stays busy even when one shard is left (the last shard of a run), without oversubscribing them while
several shards run.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from helios.models import InputError
from tasks.infer.engine import LOADS, PREFETCH_BYTES, TEXT_BUCKET_BATCHES, Engine, get_engine, input_bytes
from tasks.infer.model_ref import ModelRef
from tasks.infer.outputs import add_vectors
from tasks.infer.scan import write_parquet_atomic
from tasks.infer.source import new_hasher, read_file
from tasks.infer.table import RowReader, is_row_ref

RESULT_SCHEMA = pa.schema([
    ("content_hash", pa.string()), ("status", pa.string()), ("error", pa.string()), ("flag", pa.string()),
    ("label", pa.string()), ("confidence", pa.float32()), ("reusable", pa.bool_()),
])
_DONE = object()
_ALLOC = threading.Lock()


@dataclass(frozen=True)
class ShardSpec:
    """One shard: its files are row group ``group`` of ``todo_path`` (unique content hashes and raw paths)."""

    shard_id: str
    root: str
    todo_path: str
    group: int
    files: int
    out_path: str
    rows_dir: str = ""  # table input: where the scan copied each table's items (rows are read by reference)

    def load(self) -> tuple[list[bytes], list[str]]:
        """The shard's raw relative paths and content hashes."""
        part = pq.ParquetFile(self.todo_path).read_row_group(self.group, columns=["fs_path", "content_hash"])
        return part["fs_path"].to_pylist(), part["content_hash"].to_pylist()


@dataclass(frozen=True)
class ShardSettings:
    batch_size: int
    prefetch_batches: int = 8
    max_file_bytes: int = 64 * 1024 * 1024
    runners: int = 1  # inference threads per shard, and runs in flight per process
    outputs: tuple[str, ...] = ("label",)  # infer.outputs: label, probs, topk, embeddings
    top_k: int = 5


@dataclass(frozen=True)
class ShardOutcome:
    """What the flow needs after a shard: counts, timings for metrics, and which process ran it."""

    shard_id: str
    out_path: str
    files: int
    ok: int
    error: int
    flagged: int
    seconds: float
    batch_size: int
    batch_sizes: tuple[int, ...] = ()
    batch_seconds: tuple[float, ...] = ()
    queue_depths: tuple[int, ...] = ()
    pid: int = field(default_factory=os.getpid)
    loaded_model: bool = False


@dataclass
class _Rows:
    """Per-file results, filled by the prefetch thread (errors, flags) and the inference loop (labels)."""

    n: int
    error: list = field(init=False)
    flag: list = field(init=False)
    reusable: list = field(init=False)
    label_idx: np.ndarray = field(init=False)
    confidence: np.ndarray = field(init=False)
    probs: np.ndarray | None = None  # n x classes, filled when probs or topk are asked for
    embedding: np.ndarray | None = None  # n x dim, filled when embeddings are asked for
    item_bytes: int = 0  # images: one model input's bytes, from the first image (0: text, or none decoded yet)

    def __post_init__(self):
        self.error, self.flag, self.reusable = [None] * self.n, [None] * self.n, [True] * self.n
        self.label_idx = np.full(self.n, -1, dtype=np.int64)
        self.confidence = np.full(self.n, np.nan, dtype=np.float32)

    def fail(self, i: int, reason: str, reusable: bool) -> None:
        self.error[i], self.reusable[i] = reason, reusable

    def keep(self, name: str, idxs: list[int], values: np.ndarray) -> None:
        """Store a batch's vectors (``probs`` or ``embedding``) at their rows; the array is made on first use."""
        with _ALLOC:  # several runner threads may bring the shard's first batches at once
            if getattr(self, name) is None:
                setattr(self, name, np.zeros((self.n, values.shape[1]), dtype=np.float32))
        getattr(self, name)[idxs] = values


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read(root: str, fs_path: bytes, max_bytes: int, table: RowReader | None) -> bytes:
    """A file's bytes, or a table row's item (the row's stored value, or the image file it names)."""
    if table is None or not is_row_ref(fs_path):
        return read_file(root, fs_path, max_bytes)
    return table.read(fs_path, lambda rel: read_file(root, rel.encode("utf-8", "surrogateescape"), max_bytes))


def _load(root: str, fs_path: bytes, content_hash: str, i: int, engine: Engine, settings: ShardSettings,
          rows: _Rows, table: RowReader | None = None):
    """Read, verify and decode file ``i``; on failure record its error row and return None."""
    try:
        data = _read(root, fs_path, settings.max_file_bytes, table)
    except OSError as exc:
        return rows.fail(i, f"unreadable: {(exc.strerror or type(exc).__name__).lower()}", reusable=False)
    except ValueError as exc:  # not a regular file any more, or over max_file_bytes
        return rows.fail(i, str(exc), reusable=False)
    if new_hasher_of(data) != content_hash:
        return rows.fail(i, "file changed after the scan: rerun to process its new content", reusable=False)
    try:
        decoded = engine.adapter.preprocess(data)
    except InputError as exc:
        return rows.fail(i, str(exc), reusable=True)
    except Exception as exc:  # a decoder bug on one odd file must cost that file's row, not the shard
        return rows.fail(i, f"could not decode: {type(exc).__name__}: {exc}", reusable=False)
    rows.flag[i] = decoded.warning
    return decoded


def new_hasher_of(data: bytes) -> str:
    h = new_hasher()
    h.update(data)
    return h.hexdigest()


def _produce(spec, fs_paths, hashes, engine, settings, rows, q, stop) -> None:
    """Prefetch thread: decode files and put collated batches on the bounded queue."""
    try:
        text = engine.adapter.modality == "text"
        size = engine.batch_size(settings.batch_size)
        window = size * (TEXT_BUCKET_BATCHES if text else 1)
        idxs, items = [], []
        table = RowReader(spec.rows_dir, fs_paths) if spec.rows_dir and any(map(is_row_ref, fs_paths)) else None
        for i, (fs_path, content_hash) in enumerate(zip(fs_paths, hashes)):
            if stop.is_set():
                return
            decoded = _load(spec.root, fs_path, content_hash, i, engine, settings, rows, table)
            if decoded is not None:
                idxs.append(i)
                items.append(decoded)
                if not text and not rows.item_bytes:  # the first image tells the batch and queue sizes in bytes
                    rows.item_bytes = input_bytes(engine.adapter, decoded)
                    window = engine.batch_size(settings.batch_size, rows.item_bytes)
                    _limit_depth(q, window * rows.item_bytes)
            if len(items) >= window or (i == len(hashes) - 1 and items):
                for batch in engine.batches(idxs, items, engine.batch_size(settings.batch_size, rows.item_bytes)):
                    if not _put(q, batch, stop):
                        return
                idxs, items = [], []
        _put(q, _DONE, stop)
    except BaseException as exc:  # handed to the inference loop, which re-raises it in the task
        _put(q, exc, stop)


def _limit_depth(q: queue.Queue, batch_bytes: int) -> None:
    """Lower the prefetch queue's depth so that the batches waiting in it hold at most ``PREFETCH_BYTES`` (two batches
    at least); set by the producer before its first put."""
    with q.mutex:
        q.maxsize = max(2, min(q.maxsize, PREFETCH_BYTES // max(1, batch_bytes)))


def _consume(q: queue.Queue, engine: Engine, rows: _Rows, stats: list, slots: threading.Semaphore,
             stop: threading.Event, failures: list, outputs: tuple[str, ...] = ("label",)) -> None:
    """Inference thread: run batches off the queue until the producer's end mark (passed on to the others)."""
    try:
        while not stop.is_set():
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _DONE:
                q.put(_DONE)  # the slot it left is free: the other runners see the end mark too
                return
            if isinstance(item, BaseException):
                raise item
            idxs, feeds = item
            depth = q.qsize()
            with slots:
                t = time.perf_counter()
                logits = engine.predict(feeds, ("embeddings",) if "embeddings" in outputs else ())
                seconds = time.perf_counter() - t
            if "embeddings" in outputs:
                logits, vectors = logits
                rows.keep("embedding", idxs, vectors)
            scored = engine.adapter.postprocess(logits)
            rows.label_idx[idxs] = scored.label_idx
            rows.confidence[idxs] = scored.confidence
            if "probs" in outputs or "topk" in outputs:
                rows.keep("probs", idxs, scored.probs)
            stats.append((len(idxs), seconds, depth))
    except BaseException as exc:  # re-raised in the task by infer_shard
        failures.append(exc)
        stop.set()


def infer_shard(spec: ShardSpec, ref: ModelRef, settings: ShardSettings) -> ShardOutcome:
    """Run one shard end to end and write its results durably to ``spec.out_path``."""
    start = time.perf_counter()
    loads = LOADS["count"]
    engine = get_engine(ref)
    loaded = LOADS["count"] > loads
    fs_paths, hashes = spec.load()
    rows = _Rows(len(hashes))
    q: queue.Queue = queue.Queue(maxsize=settings.prefetch_batches)
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(spec, fs_paths, hashes, engine, settings, rows, q, stop),
                                daemon=True, name=f"prefetch-{spec.shard_id}")
    stats: list[tuple[int, float, int]] = []
    failures: list[BaseException] = []
    slots = engine.slots(settings.runners)
    runners = [threading.Thread(target=_consume, args=(q, engine, rows, stats, slots, stop, failures,
                                                       settings.outputs),
                                daemon=True, name=f"infer-{spec.shard_id}-{k}") for k in range(max(1, settings.runners) - 1)]
    producer.start()
    for runner in runners:
        runner.start()
    try:
        _consume(q, engine, rows, stats, slots, stop, failures, settings.outputs)  # this thread is one of the runners
    finally:  # the other runners finish the batch they hold: stop is checked before taking the next one
        stop.set()
        producer.join()
        for runner in runners:
            runner.join()
    if failures:
        raise failures[0]
    table = add_vectors(result_table(hashes, rows, engine.adapter.labels), rows.probs, rows.embedding,
                        engine.adapter.labels, settings.outputs, settings.top_k)
    write_parquet_atomic(table, Path(spec.out_path))
    n_err = sum(e is not None for e in rows.error)
    sizes, seconds, depths = (tuple(col) for col in zip(*stats)) if stats else ((), (), ())
    return ShardOutcome(
        spec.shard_id, spec.out_path, len(hashes), len(hashes) - n_err, n_err,
        sum(f is not None for f in rows.flag), time.perf_counter() - start,
        engine.batch_size(settings.batch_size, rows.item_bytes),
        sizes, seconds, depths, os.getpid(), loaded,
    )


def result_table(hashes, rows: _Rows, labels: tuple[str, ...]) -> pa.Table:
    """Per-hash results as Arrow (no per-row pandas work)."""
    ok = np.array([e is None for e in rows.error], dtype=bool)
    label_names = np.asarray(labels, dtype=object)
    label = np.where(ok & (rows.label_idx >= 0), label_names[np.clip(rows.label_idx, 0, len(labels) - 1)], None)
    confidence = pa.array(rows.confidence, mask=~ok)
    return pa.table({
        "content_hash": pa.array(hashes, pa.string()),
        "status": pa.array(np.where(ok, "ok", "error").tolist(), pa.string()),
        "error": pa.array(rows.error, pa.string()), "flag": pa.array(rows.flag, pa.string()),
        "label": pa.array(label.tolist(), pa.string()), "confidence": confidence,
        "reusable": pa.array(rows.reusable, pa.bool_()),
    }, schema=RESULT_SCHEMA)


def failed_shard_table(spec: ShardSpec, reason: str) -> pa.Table:
    """Error rows for every file of a shard that failed after its retries (retried on the next run)."""
    hashes = spec.load()[1]
    n = len(hashes)
    return pa.table({
        "content_hash": hashes, "status": ["error"] * n, "error": [reason] * n, "flag": [None] * n,
        "label": [None] * n, "confidence": pa.nulls(n, pa.float32()), "reusable": [False] * n,
    }, schema=RESULT_SCHEMA)
