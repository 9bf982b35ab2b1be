"""Planning and merging: which files still need the model, how they are sharded, and the final predictions table."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.infer.index import RunIndex
from tasks.infer.scan import write_parquet_atomic
from tasks.infer.shard import RESULT_SCHEMA, ShardSpec

SHARDS_DIR = "shards"
PREDICTIONS = "predictions.parquet"
PREDICTION_COLUMNS = ("path", "size_bytes", "content_hash", "status", "error", "flag", "label", "confidence",
                      "infer_label", "infer_confidence", "final_stage")


def shard_id(identity: str, hashes: list[str]) -> str:
    """Deterministic from the model identity and the shard's content hashes."""
    h = hashlib.blake2b(identity.encode(), digest_size=10)
    for x in hashes:
        h.update(x.encode())
    return h.hexdigest()


def load_reusable(index: RunIndex, identity: str, run_dir: Path) -> pa.Table:
    """Earlier results of this model that may be reused (content-derived rows only), one row per hash."""
    tables = [pq.read_table(run_dir / SHARDS_DIR / name) for name in index.committed(identity)
              if (run_dir / SHARDS_DIR / name).is_file()]
    if not tables:
        return RESULT_SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    return latest_per_hash(table.filter(table["reusable"]))


def latest_per_hash(table: pa.Table) -> pa.Table:
    """Keep the last row for each content hash (later shards override earlier ones)."""
    if table.num_rows == 0:
        return table
    pos = pa.array(range(table.num_rows), pa.int64())
    last = table.append_column("_pos", pos).group_by("content_hash").aggregate([("_pos", "max")])
    return table.take(pc.sort_indices(last["_pos_max"]))


def plan_shards(manifest: pa.Table, root: str, done: set[str], identity: str, shard_size: int,
                run_dir: Path) -> list[ShardSpec]:
    """Group the unique content hashes not in ``done`` into shards of ``shard_size``, in path order."""
    hashes = manifest["content_hash"].to_pylist()
    fs_paths = manifest["fs_path"].to_pylist()
    todo_h, todo_p, seen = [], [], set(done)
    for h, p in zip(hashes, fs_paths):
        if h is not None and h not in seen:
            seen.add(h)
            todo_h.append(h)
            todo_p.append(p)
    specs = []
    for s in range(0, len(todo_h), shard_size):
        chunk = todo_h[s:s + shard_size]
        sid = shard_id(identity, chunk)
        specs.append(ShardSpec(sid, root, tuple(todo_p[s:s + shard_size]), tuple(chunk),
                               str(run_dir / SHARDS_DIR / f"{sid}.parquet")))
    return specs


def merge_predictions(manifest: pa.Table, results: pa.Table, out_path: Path) -> pa.Table:
    """One row per manifest file: scan errors, then each hash's result; written atomically to ``out_path``."""
    results = latest_per_hash(results).drop_columns(["reusable"])
    keyed = manifest.select(["path", "size_bytes", "content_hash", "scan_error"]).append_column(
        "_order", pa.array(range(manifest.num_rows), pa.int64()))
    joined = keyed.join(results, "content_hash", join_type="left outer").sort_by("_order")
    missing = pc.is_null(joined["status"])
    status = pc.if_else(missing, "error", joined["status"])
    error = pc.if_else(missing, pc.coalesce(joined["scan_error"], pa.scalar("no result: the file was not processed")),
                       joined["error"])
    ok = pc.equal(status, "ok")
    table = pa.table({
        "path": joined["path"], "size_bytes": joined["size_bytes"], "content_hash": joined["content_hash"],
        "status": status, "error": error, "flag": joined["flag"], "label": joined["label"],
        "confidence": joined["confidence"], "infer_label": joined["label"], "infer_confidence": joined["confidence"],
        "final_stage": pc.if_else(ok, pa.scalar("infer"), pa.scalar(None, pa.string())),
    })
    write_parquet_atomic(table, out_path)
    return table
