"""Scan: walk the input, hash every file in one read, write ``manifest.parquet`` into the run directory."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from helios.errors import UsageError
from tasks.infer.source import Entry, is_remote, local_root, scan_local, scan_remote

MANIFEST = "manifest.parquet"
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


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write to a temp name, fsync, rename over ``path`` and fsync the directory: a reader sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def manifest_table(entries: list[Entry], root: str) -> pa.Table:
    """Entries sorted by path as an Arrow table; the input root travels in the schema metadata."""
    entries = sorted(entries, key=lambda e: e.fs_path)
    columns = {
        "path": [e.path for e in entries], "fs_path": [e.fs_path for e in entries],
        "size_bytes": [e.size_bytes for e in entries], "mtime": [e.mtime for e in entries],
        "content_hash": [e.content_hash for e in entries], "scan_error": [e.error for e in entries],
        "stat_key": [e.stat_key for e in entries],
    }
    return pa.table(columns, schema=MANIFEST_SCHEMA.with_metadata({ROOT_KEY: root.encode()}))


def check_root(root: str) -> None:
    """Fail in the first second on a missing input."""
    if not is_remote(root) and not local_root(root).is_dir():
        raise UsageError(f"input {root!r} is not a directory: pass an existing directory or an fsspec URL (s3://...)")


def scan_input(root: str, run_dir: Path) -> ScanResult:
    """Walk ``root``, hash each file while reading it once, and write ``run_dir/manifest.parquet``."""
    start = time.perf_counter()
    check_root(root)
    if is_remote(root):
        entries = scan_remote(root)
    else:
        root = str(local_root(root).resolve())
        entries = scan_local(root, known_entries(Path(run_dir) / MANIFEST, root))
    table = manifest_table(entries, root)
    path = write_parquet_atomic(table, Path(run_dir) / MANIFEST)
    total = sum(e.size_bytes for e in entries)
    return ScanResult(path, table.num_rows, total, time.perf_counter() - start)


def known_entries(path: Path, root: str) -> dict[bytes, Entry]:
    """Hashed entries of an earlier manifest of the same root, by raw path (the stat cache of a rerun)."""
    if not path.is_file():
        return {}
    try:
        table, old_root = read_manifest(path)
    except (OSError, KeyError, pa.ArrowException):
        return {}  # unreadable or foreign manifest: hash everything again
    if old_root != root or "stat_key" not in table.column_names:
        return {}
    table = table.filter(pa.compute.is_valid(table["content_hash"]))
    cols = [table[c].to_pylist() for c in ("path", "fs_path", "size_bytes", "mtime", "content_hash", "stat_key")]
    return {raw: Entry(p, raw, size, mtime, h, None, key) for p, raw, size, mtime, h, key in zip(*cols)}


def read_manifest(path: Path | str) -> tuple[pa.Table, str]:
    """The manifest table and the input root it was scanned from."""
    table = pq.read_table(path)
    return table, table.schema.metadata[ROOT_KEY].decode()
