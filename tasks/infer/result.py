"""InferResult: what the infer stage hands back to the pipeline flow (JSON-serializable)."""
from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel


class InferResult(BaseModel):
    predictions_path: str
    counts: dict[str, int]  # files, ok, error, flagged, reused
    errors_by_reason: dict[str, int] = {}  # "corrupt image": 3, ... (the text before the first ':')
    seconds: float
    files_per_s: float  # files the model processed this run (not reused) per second of the stage
    throughput: list[dict[str, float]] = []  # {"t": seconds since start, "files": cumulative}, one per shard
    batch_size: int
    worker_processes: int = 0  # distinct processes that ran shards this run
    model_loads: int = 0  # ONNX sessions built this run: one per worker process, not one per shard


def reason_of(message: str) -> str:
    """The short kind of an error message: its text before the first colon."""
    return message.split(":", 1)[0].strip()


def count_rows(table: pa.Table, reused: int) -> tuple[dict[str, int], dict[str, int]]:
    """Counts for the report, and error counts grouped by reason."""
    ok = pc.sum(pc.equal(table["status"], "ok")).as_py() or 0
    flagged = pc.sum(pc.is_valid(table["flag"])).as_py() or 0
    errors = [e for e in table["error"].to_pylist() if e is not None]
    counts = {"files": table.num_rows, "ok": ok, "error": table.num_rows - ok, "flagged": flagged, "reused": reused}
    return counts, dict(Counter(reason_of(e) for e in errors).most_common())
