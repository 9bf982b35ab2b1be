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


def read_labels(labels_csv: str | Path | None):
    """(path -> label, path -> corruption) from a labels CSV with columns path,label[,corruption], as read-only
    mappings held in Arrow (``helios.labels``); (None, None) without a file. A path listed twice: its last row."""
    if labels_csv is None:
        return None, None
    path = Path(labels_csv)
    if not path.is_file():
        raise UsageError(f"labels file {path} does not exist: pass a CSV with columns path,label to --labels")
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from helios.labels import PathLabels

    chunks, hashes, labels, groups, names, groups_seen = [], [], [], [], {}, {}
    with path.open(newline="", encoding="utf-8") as fh:  # row by row: 200,000 rows as dicts would be ~80 MB at once
        reader = csv.DictReader(fh)
        if reader.fieldnames is not None and not {"path", "label"} <= set(reader.fieldnames):
            raise UsageError(f"labels file {path} has columns {list(reader.fieldnames)}: it needs path and label")
        part = []
        for r in reader:
            part.append(r["path"])
            hashes.append(hash(r["path"]))
            labels.append(names.setdefault(r["label"], len(names)))
            group = r.get("corruption")
            groups.append(groups_seen.setdefault(group, len(groups_seen)) if group else -1)
            if len(part) == 65536:
                chunks.append(pa.array(part, pa.large_string()))
                part = []
        chunks.append(pa.array(part, pa.large_string()))
    paths = pa.concat_arrays(chunks)
    codes, group_codes = np.array(labels, dtype=np.int32), np.array(groups, dtype=np.int32)
    hashes = np.array(hashes, dtype=np.int64)
    if pc.count_distinct(paths).as_py() < len(paths):  # a path twice: its last row counts, as in a dict
        last = ~pd.Series(paths.to_numpy(zero_copy_only=False)).duplicated(keep="last").to_numpy()
        paths, codes, group_codes, hashes = paths.filter(pa.array(last)), codes[last], group_codes[last], hashes[last]
    truth = PathLabels(paths, codes, list(names), hashes)
    return truth, (truth.with_codes(group_codes, list(groups_seen)) if (group_codes >= 0).any() else None)
