"""predictions.parquet between the stages: refine, review and the report work on its scalar columns in pandas;
the infer stage's list columns (``infer.outputs``: probabilities, top-k, embeddings) stay on disk and are carried
over, row group by row group, each time the table is written again — their memory never grows with the input."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from helios.files import atomic_path, write_frame


def list_columns(path: Path | str) -> list[str]:
    """The list columns of a predictions file (none unless ``infer.outputs`` asked for them)."""
    if not Path(path).is_file():
        return []
    schema = pq.read_schema(path)
    return [f.name for f in schema if pa.types.is_fixed_size_list(f.type) or pa.types.is_list(f.type)]


def read_predictions(path: Path | str) -> pd.DataFrame:
    """The predictions without their list columns."""
    vectors = set(list_columns(path))
    return pd.read_parquet(path, columns=[n for n in pq.read_schema(path).names if n not in vectors])


def save_predictions(frame: pd.DataFrame, path: Path | str) -> Path:
    """Replace ``path`` with ``frame``, keeping the list columns of the file it replaces (same rows, same order:
    the stages add columns and change values, never rows)."""
    vectors = [c for c in list_columns(path) if c not in frame.columns]
    if not vectors:
        return write_frame(frame, Path(path))
    source = pq.ParquetFile(path)
    if source.metadata.num_rows != len(frame):
        raise RuntimeError(f"predictions: {len(frame)} rows to write over {source.metadata.num_rows}: the stages "
                           "must keep every row")
    frame = frame.reset_index(drop=True)
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    out_schema = pa.schema([*schema, *(source.schema_arrow.field(c) for c in vectors)])
    start = 0
    with atomic_path(Path(path)) as tmp, pq.ParquetWriter(tmp, out_schema) as writer:
        for group in range(source.num_row_groups):
            old = source.read_row_group(group, columns=["path", *vectors])
            part = pa.Table.from_pandas(frame.iloc[start:start + old.num_rows], schema=schema, preserve_index=False)
            if not part["path"].cast(pa.large_string()).equals(old["path"].cast(pa.large_string())):
                raise RuntimeError("predictions: rows changed order between stages; the list columns cannot follow")
            for c in vectors:
                part = part.append_column(source.schema_arrow.field(c), old[c])
            writer.write_table(part)
            start += old.num_rows
    return Path(path)
