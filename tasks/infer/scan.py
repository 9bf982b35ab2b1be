"""Scan: walk the input, hash every file in one read, write ``manifest.parquet`` into the run directory."""
from __future__ import annotations

import ctypes
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from helios.catalog import RunCatalog
from helios.errors import UsageError
from helios.files import atomic_path
from tasks.infer.source import Entry, StatCache, hash_local, is_remote, local_root, read_file, scan_local, scan_remote
from tasks.infer.table import TableSpec, is_table, scan_rows, table_columns

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


MALLOC_TUNING_ENV = "HELIOS_MALLOC_TUNING"
_malloc_tuning = False  # set by allow_malloc_tuning(): only a process Helios owns has its malloc tuned


def allow_malloc_tuning() -> None:
    """Let Helios set glibc malloc's thresholds in this process: the ``helios`` CLI calls this at start.

    ``mallopt`` cannot be read back, and setting a threshold switches glibc's dynamic threshold off for good, so
    there is no way to leave the process as it was; a program that uses Helios as a library keeps its malloc as
    it had it unless it calls this (or sets ``HELIOS_MALLOC_TUNING=1``, e.g. in a deployment's worker).
    """
    global _malloc_tuning
    _malloc_tuning = True


def malloc_tuning_allowed() -> bool:
    return _malloc_tuning or os.environ.get(MALLOC_TUNING_ENV) == "1"


def _malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> None:
    """glibc only (elsewhere nothing to tune): set malloc's mmap and trim thresholds, where the process allows it."""
    if not malloc_tuning_allowed():
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, mmap_bytes)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, trim_bytes)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextmanager
def system_memory_pool(tune_malloc: bool = True) -> Iterator[None]:
    """Allocate Arrow buffers with the system allocator for the duration; the pool the process had is restored.
    ``tune_malloc=False`` leaves glibc's thresholds alone (the pipeline's whole run: torch in refine is slower with
    every large block mmapped).

    The default mimalloc pool keeps freed pages per thread, so a stage that builds and frees large tables in
    phases (plan, merge) peaked higher the more files it had, although the live Arrow data is a few columns per
    file; malloc hands large blocks back to the OS as soon as they are freed. Arrow's pool is process-wide: a
    caller's own Arrow work in other threads meanwhile also allocates from the system pool (same results).
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    # Blocks of 128 KiB and more are mmapped, so each goes back to the OS when freed: glibc's dynamic threshold
    # otherwise rises after the first large free and the merge's per-chunk buffers then pile up in the heap.
    if tune_malloc:
        _malloc_thresholds(128 * 1024, 256 * 1024)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
        # Afterwards, the values glibc's dynamic threshold reaches anyway: with mmap for every large block, torch
        # (the refine stage) ran twice as slow.
        if tune_malloc:
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
        raise UsageError(f"input {root!r} is not a directory: pass an existing directory, a table (.parquet, .csv, "
                         ".jsonl) or an fsspec URL (s3://...)")


def split_root(root: str) -> tuple[str, str | None]:
    """(directory to scan, the one file to take from it): a table given as ``--input`` is scanned as the only
    file of its directory, so its rows' paths read ``t.parquet#row`` and image paths resolve beside it."""
    if is_table(root.rstrip("/")) and (is_remote(root) or local_root(root).is_file()):
        head, _, name = root.rstrip("/").rpartition("/")
        return (head or "."), name
    return root, None


def scan_input(root: str, run_dir: Path, table: TableSpec | None = None) -> ScanResult:
    """Walk ``root``, hash each file while reading it once, and write ``run_dir/manifest.parquet``.

    Entries are written in batches as the walk goes, so the scan's memory does not grow with the input. With
    ``table.column`` set, each table's rows are items (``TableScan``), streamed chunk by chunk.
    """
    start = time.perf_counter()
    root, only = split_root(root)
    check_root(root)
    catalog = RunCatalog(Path(run_dir))
    path = catalog.manifest
    if is_remote(root) and only:  # the one table alone: its folder may hold much else
        batches = iter([[replace(e, path=only, fs_path=only.encode()) for e in scan_remote(f"{root}/{only}")]])
    elif is_remote(root):
        batches = iter([sorted(scan_remote(root), key=lambda e: e.fs_path)])
    else:
        root = str(local_root(root).resolve())
        batches = iter([[hash_local(root, only)]]) if only else scan_local(root, stat_cache(path, root), ROW_GROUP)
    tables = TableScan(root, catalog.rows, table or TableSpec(), only)
    files = total = 0
    with system_memory_pool(), atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, manifest_schema(root)) as writer:
            for entries in batches:
                for part in tables.expand(entries):
                    writer.write_table(part, row_group_size=ROW_GROUP)
                    files += part.num_rows
                    total += pc.sum(part["size_bytes"]).as_py() or 0
                del entries  # else this batch stays alive while the walk builds the next one: two batches at once
        tables.check(tmp, files)
    return ScanResult(path, files, total, time.perf_counter() - start)


class TableScan:
    """Expands each table of a scan into its rows (when ``spec.column`` is set); other files stay one item each.

    A directory of nothing but tables, or a table given as the input, without ``infer.column`` is an error: the
    rows were plainly meant, and reading a whole table as one item would label it silently.
    """

    def __init__(self, root: str, rows_dir: Path, spec: TableSpec, only: str | None):
        self.root, self.rows_dir, self.spec, self.only = root, rows_dir, spec, only
        self.tables = self.others = 0
        if rows_dir.is_dir():  # an earlier scan's copies: this scan writes them again (rows/ empty: no table rows)
            for old in rows_dir.glob("*.parquet"):
                old.unlink()

    def expand(self, entries: list[Entry]) -> Iterator[pa.Table]:
        plain = []
        for entry in entries:
            if entry.error is None and is_table(entry.path):
                self.tables += 1
                if self.spec.column is not None:
                    yield from self._rows(entry)
                    continue
            else:
                self.others += 1
            plain.append(entry)
        if plain:
            yield manifest_table(plain, self.root)

    def _rows(self, entry: Entry) -> Iterator[pa.Table]:
        def open_binary():
            if is_remote(self.root):
                import fsspec

                return fsspec.open(self.root.rstrip("/") + "/" + entry.path, "rb").open()
            return open(os.path.join(os.fsencode(self.root), entry.fs_path), "rb")

        def read_path(rel: str) -> bytes:
            return read_file(self.root, rel.encode("utf-8", "surrogateescape"), 1 << 62)

        for columns in scan_rows(open_binary, entry.path, self.tables - 1, self.rows_dir, self.spec, entry.mtime,
                                 read_path):
            yield pa.table({**columns, "stat_key": pa.nulls(len(columns["path"]), pa.string())},
                           schema=manifest_schema(self.root))

    def check(self, manifest: Path, files: int) -> None:
        """After the walk: a table input needs ``infer.column``; ids must be unique."""
        if self.spec.column is None and self.tables and (self.only or not self.others):
            name = self.only or "the input's tables"
            raise UsageError(f"{name}: a table's rows are the items: name the column to read with --set "
                             f"infer.column=NAME{self._columns_hint()}")
        if self.spec.id_column and files:
            paths = pq.read_table(manifest, columns=["path"])["path"]
            if pc.count_distinct(paths).as_py() != len(paths):
                counts = pc.value_counts(paths)
                dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]
                raise UsageError(f"infer.id_column={self.spec.id_column!r}: id {dup['values'].as_py()!r} occurs "
                                 f"{dup['counts'].as_py()} times in the input: ids must be unique (or unset "
                                 f"infer.id_column to name rows file#row)")

    def _columns_hint(self) -> str:
        if not self.only or is_remote(self.root):
            return ""
        try:
            names = table_columns(lambda: open(os.path.join(self.root, self.only), "rb"), self.only)
        except (OSError, ValueError, pa.ArrowException):
            return ""
        return f" (its columns: {', '.join(names)})"


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
