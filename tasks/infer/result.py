"""InferResult: what the infer stage hands back to the pipeline flow (JSON-serializable)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from helios.errors import error_kind


class InferResult(BaseModel):
    predictions_path: str
    counts: dict[str, int]  # files, ok, error, flagged, reused, worker_deaths
    errors_by_reason: dict[str, int] = {}  # "corrupt image": 3, ... (the text before the first ':')
    seconds: float
    files_per_s: float  # files the model processed this run (not reused) per second of the stage
    throughput: list[dict[str, float]] = []  # {"t": seconds since start, "files": cumulative}, one per shard
    batch_size: int
    worker_processes: int = 0  # distinct processes that ran shards this run
    model_loads: int = 0  # ONNX sessions built this run: one per worker process, not one per shard
    worker_deaths: list[str] = []  # local shard worker processes that died: "worker died: SIGKILL (signal 9) (...)"
    outputs: dict = {}  # infer.outputs: {"outputs": [...], "columns": {list column: width}, "top_k": k}


@dataclass
class Summary:
    """Counts over the predictions table, accumulated chunk by chunk while it is written."""

    files: int = 0
    ok: int = 0
    flagged: int = 0
    reasons: Counter = field(default_factory=Counter)

    def add(self, table: pa.Table) -> None:
        self.files += table.num_rows
        self.ok += pc.sum(pc.equal(table["status"], "ok")).as_py() or 0
        self.flagged += pc.sum(pc.is_valid(table["flag"])).as_py() or 0
        self.reasons.update(error_kind(e) for e in table["error"].drop_null().to_pylist())

    def counts(self, reused: int) -> dict[str, int]:
        return {"files": self.files, "ok": self.ok, "error": self.files - self.ok, "flagged": self.flagged,
                "reused": reused}
