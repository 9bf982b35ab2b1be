"""The stage's answers kept for an unchanged rerun, in the refine work folder.

When the source model, the settings (``memo.adaptation_key``), the providers, the rows to refine (path, content hash,
the infer stage's label and confidence, in the stage's order) and the true labels are those the kept answers were
computed for, the stage returns them as they were: no file is read, torch is not imported, nothing is re-inferred.
Any difference (one file changed, one infer answer changed, another label set) misses, and the stage replays its
kept steps instead (``tasks.refine.memo``). One slot: each run's answers replace the last ones. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from helios.files import atomic_path
from tasks.refine.context import RefineContext
from tasks.refine.memo import adaptation_key, read_json
from tasks.refine.state import Outcome

TABLE, META = "answers.parquet", "answers.json"
VERSION = 1  # bump when what a kept answer holds changes


def answers_key(ctx: RefineContext, paths: pa.Array, hashes: pa.Array, label: np.ndarray, confidence: np.ndarray,
                truth: np.ndarray | None) -> str:
    """Hash of everything the answers depend on: the adaptation key, providers, the rows in order (paths and
    content hashes as Arrow large-string arrays, the infer stage's label indices and confidences), true labels."""
    h = hashlib.sha256(json.dumps([VERSION, adaptation_key(ctx), list(ctx.providers)]).encode())
    for column in (paths, hashes):
        _hash_strings(h, column)
    h.update(np.ascontiguousarray(label, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(confidence, dtype=np.float64).tobytes())
    h.update(b"-" if truth is None else np.ascontiguousarray(truth, dtype=np.int64).tobytes())
    return h.hexdigest()[:32]


def _hash_strings(h, values: pa.Array) -> None:
    """Feed an Arrow large-string array to ``h``: its nulls, each value's length, then the bytes, read from Arrow's
    buffers (pandas' row hash made a Python str per row: ~40 MB more at 200,000 files)."""
    if values.null_count:
        h.update(values.is_null().to_numpy(zero_copy_only=False).tobytes())
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset:values.offset + len(values) + 1]
    h.update(np.diff(offsets).tobytes())
    if len(values):
        h.update(memoryview(values.buffers()[2])[offsets[0]:offsets[-1]])


def _plain(value):
    """JSON for the summary's numpy values (numbers stay numbers)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def save(root: Path, key: str, outcome: Outcome, created: str) -> None:
    """Keep ``outcome`` under ``key``: the arrays in a Parquet file, then the key and summary (written last, so a
    kill between the two leaves nothing that matches)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / META).unlink(missing_ok=True)
    columns = {"label": outcome.label, "confidence": outcome.confidence, "method": pa.array(outcome.method, pa.string())}
    columns.update({f"column:{name}": values for name, values in outcome.columns.items()})
    with atomic_path(root / TABLE) as tmp:
        pq.write_table(pa.table(columns), tmp)
    with atomic_path(root / META) as tmp:
        Path(tmp).write_text(json.dumps({"key": key, "created": created, "rows": len(outcome.label),
                                         "summary": outcome.summary}, default=_plain))


def load(root: Path, key: str) -> tuple[Outcome, str] | None:
    """The kept outcome and when it was made, if it was kept under ``key``; else None."""
    meta = read_json(root / META)
    if meta is None or meta.get("key") != key or not (root / TABLE).is_file():
        return None
    table = pq.read_table(root / TABLE)
    if table.num_rows != meta["rows"]:
        return None
    columns = {name.split(":", 1)[1]: table[name].to_numpy() for name in table.column_names
               if name.startswith("column:")}
    method = table["method"].to_numpy(zero_copy_only=False).astype(object)
    outcome = Outcome(table["label"].to_numpy(), table["confidence"].to_numpy(), columns, method, meta["summary"])
    return outcome, meta["created"]
