"""Planning and merging: which files still need the model, how they are sharded, and the final predictions table."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from helios.catalog import RunCatalog
from helios.files import atomic_path
from tasks.infer.index import RunIndex
from tasks.infer.outputs import VectorSource, locate, read_located
from tasks.infer.result import Summary
from tasks.infer.scan import ROW_GROUP
from tasks.infer.shard import RESULT_SCHEMA, ShardSpec

PREDICTIONS_SCHEMA = pa.schema([
    ("path", pa.string()), ("size_bytes", pa.int64()), ("content_hash", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("flag", pa.string()), ("label", pa.string()), ("confidence", pa.float32()),
    ("infer_label", pa.string()), ("infer_confidence", pa.float32()), ("final_stage", pa.string()),
])


def shard_id(identity: str, hashes: list[str]) -> str:
    """Deterministic from the model identity and the shard's content hashes."""
    h = hashlib.blake2b(identity.encode(), digest_size=10)
    for x in hashes:
        h.update(x.encode())
    return h.hexdigest()


def load_reusable(index: RunIndex, identity: str, run_dir: Path) -> pa.Table:
    """Earlier results of this model that may be reused (content-derived rows only), one row per hash."""
    shards = RunCatalog(Path(run_dir)).shards
    tables = [pq.read_table(shards / name) for name in index.committed(identity) if (shards / name).is_file()]
    if not tables:
        return RESULT_SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    return latest_per_hash(table.filter(table["reusable"]))


def load_reusable_located(index: RunIndex, identity: str, run_dir: Path) -> tuple[pa.Table, list[str]]:
    """As ``load_reusable``, without the vectors: each row says where it lies (``_file`` in the returned list of
    shard files, ``_row``), for the merge to read its vectors then."""
    shards = RunCatalog(Path(run_dir)).shards
    files = [str(shards / name) for name in index.committed(identity) if (shards / name).is_file()]
    tables = read_located(files, RESULT_SCHEMA.names)
    if not tables:
        return locate(RESULT_SCHEMA.empty_table(), -1), files
    table = pa.concat_tables(tables)
    return latest_per_hash(table.filter(table["reusable"])), files


def latest_per_hash(table: pa.Table) -> pa.Table:
    """Keep the last row for each content hash (later shards override earlier ones)."""
    if table.num_rows == 0:
        return table
    pos = pa.array(range(table.num_rows), pa.int64())
    last = table.append_column("_pos", pos).group_by("content_hash").aggregate([("_pos", "max")])
    return table.take(pc.sort_indices(last["_pos_max"]))


def plan_todo(manifest: pa.Table, done: pa.Array | set[str]) -> pa.Table:
    """Unique content hashes (first path of each, in manifest order) that have no reusable result yet.

    Stays in Arrow: a Python set or list per file would make the flow's memory grow with the input.
    """
    keep = pc.is_valid(manifest["content_hash"])
    done = done if isinstance(done, pa.Array) else pa.array(sorted(done), pa.string())
    if len(done):
        keep = pc.and_(keep, pc.invert(pc.is_in(manifest["content_hash"], done)))
    table = manifest.select(["content_hash", "fs_path"]).filter(keep)
    if table.num_rows == 0:
        return table
    # a row is kept when it is the first of its hash: index_in gives the first position of each value in the
    # value set, so order is kept without a sort (and without a group_by, whose buffers come from the C++
    # default pool, not the one the flow chose)
    hashes = table["content_hash"].combine_chunks()
    first = pc.index_in(hashes, value_set=hashes)
    return table.filter(pc.equal(first, pa.array(np.arange(table.num_rows, dtype=np.int32))))


def write_shards(todo: pa.Table, root: str, identity: str, shard_size: int, run_dir: Path) -> list[ShardSpec]:
    """Write the files to infer to ``run_dir/todo.parquet``, one row group per shard, and return small specs
    that point at their row group: task parameters stay a few hundred bytes, whatever the shard size."""
    path = RunCatalog(Path(run_dir)).todo
    specs = []
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, todo.schema) as writer:
        for group, start in enumerate(range(0, todo.num_rows, shard_size)):
            part = todo.slice(start, shard_size)
            writer.write_table(part, row_group_size=shard_size)
            sid = shard_id(identity, part["content_hash"].to_pylist())
            specs.append(ShardSpec(sid, root, str(path), group, part.num_rows,
                                   str(RunCatalog(Path(run_dir)).shards / f"{sid}.parquet"),
                                   str(RunCatalog(Path(run_dir)).rows)))
    return specs


def plan_shards(manifest: pa.Table, root: str, done: pa.Array | set[str], identity: str, shard_size: int,
                run_dir: Path) -> list[ShardSpec]:
    """Shards of the files that still need the model (see ``plan_todo`` and ``write_shards``)."""
    return write_shards(plan_todo(manifest, done), root, identity, shard_size, run_dir)


def merge_predictions(manifest_path: Path | str, results: pa.Table, out_path: Path,
                      chunk_rows: int = ROW_GROUP, vectors: VectorSource | None = None) -> Summary:
    """One row per manifest file (scan errors, then each hash's result), written atomically to ``out_path``.

    ``results`` must hold one row per content hash. The manifest is streamed in chunks, so the memory of the
    merge grows with the results (a few columns per unique file), not with a full copy of the joined table. With
    ``vectors``, ``results`` says where each hash's row lies (``_file``, ``_row``) and each chunk reads its vectors
    from those shard files (chunks of at most 4,096 rows: a chunk's vectors are all it holds of them).
    """
    if "reusable" in results.column_names:
        results = results.drop_columns(["reusable"])
    results = results.combine_chunks()  # no copy when it is already contiguous
    summary = Summary()
    schema = PREDICTIONS_SCHEMA
    if vectors is not None:
        chunk_rows = min(chunk_rows, 4096)
        schema = pa.schema([*PREDICTIONS_SCHEMA, *vectors.schema])
    with atomic_path(Path(out_path)) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        source = pq.ParquetFile(manifest_path)
        # row group by row group: iter_batches kept ~2 MB per batch alive until it finished (the RSS of a
        # 200,000-file merge grew by ~8 MB per 50,000-row chunk), read_row_group frees each one
        for group in range(source.num_row_groups):
            part = source.read_row_group(group, columns=["path", "size_bytes", "content_hash", "scan_error"])
            for start in range(0, part.num_rows, chunk_rows):
                table = _join_chunk(part.slice(start, chunk_rows), results, vectors)
                summary.add(table)
                writer.write_table(table)
            del part
    return summary


def _join_chunk(chunk: pa.Table, results: pa.Table, vectors: VectorSource | None = None) -> pa.Table:
    """Look up each file's result by hash (``index_in`` + ``take``: order kept, no hash-join buffers)."""
    picked = results.take(pc.index_in(chunk["content_hash"], value_set=results["content_hash"]))
    missing = pc.is_null(picked["status"])
    status = pc.if_else(missing, "error", picked["status"])
    error = pc.if_else(missing, pc.coalesce(chunk["scan_error"], pa.scalar("no result: the file was not processed")),
                       picked["error"])
    ok = pc.equal(status, "ok")
    table = pa.table({
        "path": chunk["path"], "size_bytes": chunk["size_bytes"], "content_hash": chunk["content_hash"],
        "status": status, "error": error, "flag": picked["flag"], "label": picked["label"],
        "confidence": picked["confidence"], "infer_label": picked["label"], "infer_confidence": picked["confidence"],
        "final_stage": pc.if_else(ok, pa.scalar("infer"), pa.scalar(None, pa.string())),
    }, schema=PREDICTIONS_SCHEMA)
    if vectors is None:
        return table
    for name, column in vectors.take(picked["_file"], picked["_row"]).items():
        table = table.append_column(vectors.schema.field(name), column)
    return table
