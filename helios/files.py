"""File helpers every layer uses: the one atomic writer, and the labels CSV reader.

``atomic_path`` is the only way Helios replaces a file: write to a temp name beside it, fsync, rename over the
target, fsync the directory. A reader (or a rerun after ``kill -9``) sees the old file or the new one, never a torn
one. The other writers here are thin uses of it.
"""
from __future__ import annotations

import csv
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from helios.errors import UsageError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path to write; on success it is fsynced, renamed over ``path`` and the directory fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(data: bytes, path: Path) -> Path:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(data: Any, path: Path, **dumps: Any) -> Path:
    """Replace ``path`` with ``data`` as JSON atomically (indented, values JSON does not know as text)."""
    options = {"indent": 2, "default": str, **dumps}
    return write_bytes((json.dumps(data, **options) + "\n").encode("utf-8"), path)


def write_frame(frame, path: Path) -> Path:
    """Replace ``path`` with a pandas DataFrame as Parquet atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)


def read_labels(labels_csv: str | Path | None) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """(path -> label, path -> corruption) from a labels CSV with columns path,label[,corruption]; (None, None)
    without a file."""
    if labels_csv is None:
        return None, None
    path = Path(labels_csv)
    if not path.is_file():
        raise UsageError(f"labels file {path} does not exist: pass a CSV with columns path,label to --labels")
    truth, groups, names = {}, {}, {}
    with path.open(newline="", encoding="utf-8") as fh:  # row by row: 200,000 rows as dicts would be ~80 MB at once
        reader = csv.DictReader(fh)
        if reader.fieldnames is not None and not {"path", "label"} <= set(reader.fieldnames):
            raise UsageError(f"labels file {path} has columns {list(reader.fieldnames)}: it needs path and label")
        for r in reader:
            # the few distinct labels and corruptions are kept once each, not once per row (~100 bytes a file)
            truth[r["path"]] = names.setdefault(r["label"], r["label"])
            if r.get("corruption"):
                groups[r["path"]] = names.setdefault(r["corruption"], r["corruption"])
    return truth, groups or None
