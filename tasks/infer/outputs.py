"""The infer stage's optional outputs (``infer.outputs``): class probabilities, top-k and embeddings.

They are fixed-size list columns, in each shard file and in predictions.parquet: ``infer_probs`` (float32, one per
label), ``infer_topk_labels`` / ``infer_topk_probs`` (``infer.top_k`` of them, best first) and ``embedding``
(float32, the model's pooled vector). The probability columns are named for the infer stage, as ``infer_label`` is:
refine and review may change ``label`` and ``confidence``, never these, which stay the infer stage's answer (and
agree with ``infer_label``).

Vectors never gather in memory: the merge keeps, per content hash, where its row lies (``_file``, ``_row``) and
reads the vectors of each output chunk from a few shard files at a time (``VectorSource``).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

OUTPUT_COLUMNS = {"probs": ("infer_probs",), "topk": ("infer_topk_labels", "infer_topk_probs"),
                  "embeddings": ("embedding",)}


def vector_columns(outputs: tuple[str, ...]) -> list[str]:
    """The list columns ``outputs`` add, in a fixed order."""
    return [c for name in ("probs", "topk", "embeddings") if name in outputs for c in OUTPUT_COLUMNS[name]]


def fixed_list(values: np.ndarray | list, width: int, valid: np.ndarray, kind: pa.DataType = pa.float32()) -> pa.Array:
    """Rows of ``width`` values as a fixed-size list array; rows where ``valid`` is False are null."""
    flat = pa.array(np.asarray(values).reshape(-1), kind)
    return pa.FixedSizeListArray.from_arrays(flat, width, mask=pa.array(~valid))


def add_vectors(table: pa.Table, probs: np.ndarray | None, embedding: np.ndarray | None, labels: tuple[str, ...],
                outputs: tuple[str, ...], top_k: int) -> pa.Table:
    """A shard's result table with the list columns ``outputs`` ask for (null on error rows)."""
    n = table.num_rows
    ok = np.asarray(pc.equal(table["status"], "ok").to_numpy(zero_copy_only=False), dtype=bool)
    if probs is None:
        probs = np.zeros((n, len(labels)), np.float32)
        ok_probs = np.zeros(n, dtype=bool)
    else:
        ok_probs = ok
    if "probs" in outputs:
        table = table.append_column("infer_probs", fixed_list(probs, probs.shape[1], ok_probs))
    if "topk" in outputs:
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        names = np.asarray(labels, dtype=object)[order]
        table = table.append_column("infer_topk_labels", fixed_list(names.astype(str), k, ok_probs, pa.string()))
        table = table.append_column("infer_topk_probs",
                                    fixed_list(np.take_along_axis(probs, order, axis=1), k, ok_probs))
    if "embeddings" in outputs and embedding is not None:  # a shard of only error rows: no column (read as nulls)
        table = table.append_column("embedding", fixed_list(embedding, embedding.shape[1], ok))
    return table


def read_located(paths: list[str], columns: list[str], first: int = 0) -> list[pa.Table]:
    """Result rows of shard files without their vectors, each with where it lies: ``_file`` (``first`` + the
    position in ``paths``) and ``_row``."""
    tables = []
    for j, path in enumerate(paths):
        table = pq.read_table(path, columns=columns)
        tables.append(locate(table, first + j))
    return tables


def locate(table: pa.Table, file: int) -> pa.Table:
    """``table`` with ``_file`` = ``file`` (-1: no file, vectors null) and ``_row`` = its row number."""
    n = table.num_rows
    return table.append_column("_file", pa.array(np.full(n, file, np.int32))) \
        .append_column("_row", pa.array(np.arange(n, dtype=np.int32)))


class VectorSource:
    """The vector columns of result rows, read from their shard files a few files at a time."""

    def __init__(self, files: list[str], columns: list[str], cache: int = 4):
        self.files, self.columns, self.cache = files, columns, cache
        self._loaded: OrderedDict[int, pa.Table] = OrderedDict()
        self.types = {}
        for path in files:
            schema = pq.read_schema(path)
            for c in columns:
                if c in schema.names and c not in self.types:
                    self.types[c] = schema.field(c).type
        self.schema = pa.schema([(c, self.types.get(c, pa.list_(pa.float32()))) for c in columns])

    def _file(self, k: int) -> pa.Table:
        if k in self._loaded:
            self._loaded.move_to_end(k)
            return self._loaded[k]
        schema = pq.read_schema(self.files[k])
        table = pq.read_table(self.files[k], columns=[c for c in self.columns if c in schema.names])
        table = pa.table({c: table[c] if c in table.column_names else pa.nulls(table.num_rows, self.schema.field(c).type)
                          for c in self.columns}, schema=self.schema)
        self._loaded[k] = table
        if len(self._loaded) > self.cache:
            self._loaded.popitem(last=False)
        return table

    def take(self, files: pa.Array, rows: pa.Array) -> dict[str, pa.ChunkedArray]:
        """The vectors at (``files``, ``rows``) for each row of an output chunk; null where ``files`` is null/-1."""
        f = np.asarray(pc.fill_null(files, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        r = np.asarray(pc.fill_null(rows, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        wanted = sorted(set(f[f >= 0].tolist()))
        if not wanted:
            return {c: pa.chunked_array([pa.nulls(len(f), self.schema.field(c).type)]) for c in self.columns}
        parts, offsets, start = [], {}, 0
        for k in wanted:
            table = self._file(k)
            parts.append(table)
            offsets[k] = start
            start += table.num_rows
        joined = pa.concat_tables(parts)
        base = np.array([offsets.get(k, 0) for k in f.tolist()], dtype=np.int64)
        index = pa.array(base + r, mask=f < 0)
        return {c: joined[c].take(index) for c in self.columns}


def vectors_summary(predictions_path: str, outputs: tuple[str, ...], top_k: int) -> dict:
    """What the report and MLflow get of the vectors: the outputs, their columns and widths (never the values)."""
    schema = pq.read_schema(predictions_path)
    widths = {c: schema.field(c).type.list_size for c in vector_columns(outputs)
              if c in schema.names and pa.types.is_fixed_size_list(schema.field(c).type)}
    out: dict = {"outputs": list(outputs), "columns": widths}
    if "topk" in outputs:
        out["top_k"] = top_k
    return out
