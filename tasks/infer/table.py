"""Tables as input: each row of a Parquet, CSV or JSONL file is one item.

The scan streams a table in chunks (Parquet batches, CSV blocks, a few thousand JSON lines), hashes each row's item
and copies the item column into ``rows/<k>.parquet`` in row groups of ``ROWS_GROUP`` rows. The manifest refers to a
row as ``fs_path = NUL + b"k:row"`` (no file name can hold a NUL byte), so a shard reads the row groups of just its
rows, whatever the source's layout: a CSV has no random access, and a Parquet writer may put a million rows in one
row group. Nothing here imports Prefect.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from helios.errors import UsageError
from helios.files import atomic_path
from tasks.infer.source import new_hasher

TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".jsonl", ".ndjson")
ROWS_GROUP = 8192  # rows per row group of a rows file: a 2,000-row shard reads one or two of them
CHUNK_ROWS = 8192  # rows per chunk while a table is scanned: the scan's memory follows this, not the table
KIND_KEY = b"helios.kind"  # rows file metadata: "bytes" (the item itself) or "path" (an image path under the root)
REF = b"\0"


@dataclass(frozen=True)
class TableSpec:
    """How the scan reads tables: the item column, an optional id column, and what the model takes."""

    column: str | None = None
    id_column: str | None = None
    modality: str = "text"  # image: a string column holds image paths relative to the table, binary the bytes


def is_table(name: str) -> bool:
    return name.lower().endswith(TABLE_SUFFIXES)


def row_ref(k: int, row: int) -> bytes:
    return REF + b"%d:%d" % (k, row)


def is_row_ref(fs_path: bytes) -> bool:
    return fs_path[:1] == REF


def parse_ref(fs_path: bytes) -> tuple[int, int]:
    k, row = fs_path[1:].split(b":")
    return int(k), int(row)


def rows_file(rows_dir: Path | str, k: int) -> Path:
    return Path(rows_dir) / f"{k}.parquet"


def check_columns(name: str, wanted: list[str], names: list[str]) -> None:
    """UsageError naming the first of ``wanted`` (the item column, then the id column) that ``names`` lacks."""
    lost = [c for c in wanted if c not in names]
    if lost:
        setting = "infer.column" if lost[0] == wanted[0] else "infer.id_column"
        raise UsageError(f"table {name} has no column {lost[0]!r} (its columns: {', '.join(names) or 'none'}): "
                         f"set {setting} to one of them")


def table_columns(open_binary: Callable, name: str) -> list[str]:
    """The column names of a table (the first JSON line's keys for JSONL)."""
    with open_binary() as fh:
        if name.lower().endswith((".parquet", ".pq")):
            return pq.ParquetFile(fh).schema_arrow.names
        if name.lower().endswith(".csv"):
            import pyarrow.csv as pacsv

            return pacsv.open_csv(fh).schema.names
        for line in fh:
            if line.strip():
                record = json.loads(line)
                return list(record) if isinstance(record, dict) else []
    return []


def table_chunks(open_binary: Callable, name: str, columns: list[str]) -> Iterator[pa.Table]:
    """``columns`` of a table in chunks (an ``_error`` column says why a row could not be read)."""
    lower = name.lower()
    if lower.endswith((".jsonl", ".ndjson")):
        yield from _json_chunks(open_binary, name, columns)
        return
    check_columns(name, columns, table_columns(open_binary, name))
    with open_binary() as fh:
        if lower.endswith((".parquet", ".pq")):
            batches = pq.ParquetFile(fh).iter_batches(batch_size=CHUNK_ROWS, columns=columns)
        else:
            import pyarrow.csv as pacsv

            batches = pacsv.open_csv(fh, read_options=pacsv.ReadOptions(block_size=1 << 22),
                                     convert_options=pacsv.ConvertOptions(
                                         include_columns=columns, column_types={c: pa.string() for c in columns}))
        for batch in batches:
            table = pa.Table.from_batches([batch]).select(columns)
            yield table.append_column("_error", pa.nulls(table.num_rows, pa.string()))


def _json_chunks(open_binary: Callable, name: str, columns: list[str]) -> Iterator[pa.Table]:
    """JSON lines parsed one by one: a bad line costs its row, and the types may differ from line to line."""
    values: dict[str, list] = {c: [] for c in [*columns, "_error"]}
    found = False
    with open_binary() as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                error = None
            except ValueError as exc:
                record, error = {}, f"not a JSON object: line {number}: {str(exc)[:80]}"
            found = found or columns[0] in record
            for c in columns:
                values[c].append(_plain(record.get(c)))
            values["_error"].append(error)
            if len(values["_error"]) >= CHUNK_ROWS:
                yield _json_table(values, columns)
                values = {c: [] for c in [*columns, "_error"]}
    if values["_error"]:
        yield _json_table(values, columns)
    if not found and columns:
        check_columns(name, columns[:1], table_columns(open_binary, name))


def _plain(value):
    """A JSON value as a string, bytes kept (image bytes cannot be JSON; text can be any JSON scalar)."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _json_table(values: dict[str, list], columns: list[str]) -> pa.Table:
    return pa.table({c: pa.array(values[c], pa.string()) for c in [*columns, "_error"]})


def scan_rows(open_binary: Callable, name: str, k: int, rows_dir: Path, spec: TableSpec, mtime: float,
              read_path: Callable[[str], bytes]) -> Iterator[dict[str, list]]:
    """Manifest columns for each chunk of table ``name`` (relative to the input root), writing ``rows/<k>.parquet``.

    ``read_path`` reads an image path (relative to the input root) for its hash. Rows whose item is missing or
    unreadable get a ``scan_error``.
    """
    columns = [spec.column] + ([spec.id_column] if spec.id_column else [])
    folder = os.path.dirname(name)
    kind = None
    row = 0
    with atomic_path(rows_file(rows_dir, k)) as tmp:
        writer = None
        try:
            for chunk in table_chunks(open_binary, name, columns):
                if kind is None:
                    kind = "path" if spec.modality == "image" and not pa.types.is_binary(chunk[0].type) \
                        and not pa.types.is_large_binary(chunk[0].type) else "bytes"
                    schema = pa.schema([("value", pa.binary())], metadata={KIND_KEY: kind.encode()})
                    writer = pq.ParquetWriter(tmp, schema)
                out, stored = _chunk_rows(chunk, name, k, row, kind, folder, spec, mtime, read_path)
                writer.write_table(pa.table({"value": pa.array(stored, pa.binary())}, schema=writer.schema),
                                   row_group_size=ROWS_GROUP)
                row += chunk.num_rows
                yield out
            if writer is None:  # an empty table: an empty rows file
                writer = pq.ParquetWriter(tmp, pa.schema([("value", pa.binary())]))
        finally:
            if writer is not None:
                writer.close()


def _chunk_rows(chunk: pa.Table, name: str, k: int, first: int, kind: str, folder: str, spec: TableSpec,
                mtime: float, read_path: Callable[[str], bytes]) -> tuple[dict[str, list], list]:
    """Manifest columns and stored values (``rows`` file) for one chunk."""
    items = chunk[0]
    if kind == "bytes" and spec.modality == "text" and not pa.types.is_string(items.type):
        items = pc.cast(items, pa.string())
    values = items.to_pylist()
    ids = chunk[1].cast(pa.string()).to_pylist() if spec.id_column else [None] * len(values)
    out: dict[str, list] = {c: [] for c in ("path", "fs_path", "size_bytes", "mtime", "content_hash", "scan_error")}
    stored = []
    for i, (value, key, error) in enumerate(zip(values, ids, chunk["_error"].to_pylist())):
        row = first + i
        data, keep = None, None
        if error is None and (value is None or len(value) == 0):
            error = f"empty row: no value in column {spec.column!r}"
        elif error is None and spec.id_column and key is None:
            error = f"no id: column {spec.id_column!r} is empty in row {row}"
        elif error is None:
            data, keep, error = _item(value, kind, folder, read_path)
        out["path"].append(key if spec.id_column and key is not None else f"{name}#{row}")
        out["fs_path"].append(row_ref(k, row))
        out["size_bytes"].append(len(data) if data is not None else 0)
        out["mtime"].append(mtime)
        out["content_hash"].append(_hash(data) if data is not None else None)
        out["scan_error"].append(error)
        stored.append(keep)
    return out, stored


def _item(value, kind: str, folder: str, read_path: Callable[[str], bytes]):
    """(item bytes to hash, value to store, error) for one cell."""
    if kind == "bytes":
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return data, data, None
    rel = os.path.normpath(os.path.join(folder, value))
    try:
        return read_path(rel), rel.encode("utf-8", "surrogateescape"), None
    except (OSError, ValueError) as exc:
        return None, None, f"unreadable: image {value!r} ({exc})"


def _hash(data: bytes) -> str:
    h = new_hasher()
    h.update(data)
    return h.hexdigest()


class RowReader:
    """The stored items of a shard's table rows, read by row group (only the groups its rows fall in)."""

    def __init__(self, rows_dir: str, fs_paths: list[bytes]):
        wanted: dict[int, set[int]] = {}
        for fs_path in fs_paths:
            if is_row_ref(fs_path):
                k, row = parse_ref(fs_path)
                wanted.setdefault(k, set()).add(row)
        self.values: dict[tuple[int, int], bytes | None] = {}
        self.kinds: dict[int, str] = {}
        for k, rows in wanted.items():
            source = pq.ParquetFile(rows_file(rows_dir, k))
            self.kinds[k] = (source.schema_arrow.metadata or {}).get(KIND_KEY, b"bytes").decode()
            starts = [0]
            for g in range(source.num_row_groups):
                starts.append(starts[-1] + source.metadata.row_group(g).num_rows)
            groups = sorted({_group(starts, r) for r in rows if r < starts[-1]})
            for g in groups:
                column = source.read_row_group(g, columns=["value"])["value"].to_pylist()
                for r in rows:
                    if starts[g] <= r < starts[g + 1]:
                        self.values[(k, r)] = column[r - starts[g]]

    def read(self, fs_path: bytes, read_path: Callable[[str], bytes]) -> bytes:
        """The item of a row: its stored bytes, or the image file its path names (via ``read_path``)."""
        k, row = parse_ref(fs_path)
        if (k, row) not in self.values or self.values[(k, row)] is None:
            raise ValueError("row changed after the scan: rerun to process its new content")
        value = self.values[(k, row)]
        if self.kinds.get(k) == "path":
            return read_path(value.decode("utf-8", "surrogateescape"))
        return value


def _group(starts: list[int], row: int) -> int:
    import bisect

    return max(0, bisect.bisect_right(starts, row) - 1)
