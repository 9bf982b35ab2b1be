"""Scan: walk the input, hash every file in one read, write ``manifest.parquet`` into the run directory."""
from __future__ import annotations

import ctypes
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from helios.catalog import RunCatalog
from helios.errors import UsageError
from helios.files import atomic_path
from tasks.infer.source import Entry, StatCache, is_remote, local_root, scan_local, scan_remote

ROOT_KEY = b"helios.root"
MANIFEST_SCHEMA = pa.schema([
    ("path", pa.string()), ("fs_path", pa.binary()), ("size_bytes", pa.int64()), ("mtime", pa.float64()),
    ("content_hash", pa.string()), ("scan_error", pa.string()), ("stat_key", pa.string()),
])


@dataclass(frozen=True)
class ScanResult:
    manifest_path: Path
    files: int
    bytes: int
    seconds: float


ROW_GROUP = 50_000  # readers stream row groups: memory follows this, not the file's length


def _malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> None:
    """glibc only (elsewhere nothing to tune): set malloc's mmap and trim thresholds."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, mmap_bytes)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, trim_bytes)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextmanager
def system_memory_pool() -> Iterator[None]:
    """Allocate Arrow buffers with the system allocator for the duration (the previous pool afterwards).

    The default mimalloc pool keeps freed pages per thread, so a stage that builds and frees large tables in
    phases (plan, merge) peaked higher the more files it had, although the live Arrow data is a few columns per
    file; malloc hands large blocks back to the OS as soon as they are freed.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    # Blocks of 128 KiB and more are mmapped, so each goes back to the OS when freed: glibc's dynamic threshold
    # otherwise rises after the first large free and the merge's per-chunk buffers then pile up in the heap.
    _malloc_thresholds(128 * 1024, 256 * 1024)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
        # Afterwards, the values glibc's dynamic threshold reaches anyway: with mmap for every large block, torch
        # (the refine stage) ran twice as slow.
        _malloc_thresholds(32 * 1024 * 1024, 64 * 1024 * 1024)


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP)
    return path


def manifest_table(entries: list[Entry], root: str) -> pa.Table:
    """Entries as an Arrow table; the input root travels in the schema metadata."""
    columns = {
        "path": [e.path for e in entries], "fs_path": [e.fs_path for e in entries],
        "size_bytes": [e.size_bytes for e in entries], "mtime": [e.mtime for e in entries],
        "content_hash": [e.content_hash for e in entries], "scan_error": [e.error for e in entries],
        "stat_key": [e.stat_key for e in entries],
    }
    return pa.table(columns, schema=manifest_schema(root))


def manifest_schema(root: str) -> pa.Schema:
    return MANIFEST_SCHEMA.with_metadata({ROOT_KEY: root.encode()})


def check_root(root: str) -> None:
    """Fail in the first second on a missing input."""
    if not is_remote(root) and not local_root(root).is_dir():
        raise UsageError(f"input {root!r} is not a directory: pass an existing directory or an fsspec URL (s3://...)")


def scan_input(root: str, run_dir: Path) -> ScanResult:
    """Walk ``root``, hash each file while reading it once, and write ``run_dir/manifest.parquet``.

    Entries are written in batches as the walk goes, so the scan's memory does not grow with the input.
    """
    start = time.perf_counter()
    check_root(root)
    path = RunCatalog(Path(run_dir)).manifest
    if is_remote(root):
        batches = iter([sorted(scan_remote(root), key=lambda e: e.fs_path)])
    else:
        root = str(local_root(root).resolve())
        batches = scan_local(root, stat_cache(path, root), ROW_GROUP)
    files = total = 0
    with system_memory_pool(), atomic_path(path) as tmp, pq.ParquetWriter(tmp, manifest_schema(root)) as writer:
        for entries in batches:
            writer.write_table(manifest_table(entries, root), row_group_size=ROW_GROUP)
            files += len(entries)
            total += sum(e.size_bytes for e in entries)
            del entries  # else this batch stays alive while the walk builds the next one: two batches at once
    return ScanResult(path, files, total, time.perf_counter() - start)


def stat_cache(path: Path, root: str) -> StatCache | None:
    """The earlier manifest of the same root as a stat cache; None when there is none (or it is unreadable)."""
    if not path.is_file():
        return None
    try:
        table, old_root = read_manifest(path)
    except (OSError, KeyError, pa.ArrowException):
        return None  # unreadable or foreign manifest: hash everything again
    if old_root != root or "stat_key" not in table.column_names:
        return None
    return StatCache(table)


def read_manifest(path: Path | str, columns: list[str] | None = None) -> tuple[pa.Table, str]:
    """The manifest table (optionally only some columns) and the input root it was scanned from."""
    table = pq.read_table(path, columns=columns)
    return table, pq.read_schema(path).metadata[ROOT_KEY].decode()
