"""Small frame helpers the stages share."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def is_in(values: pd.Series | pd.Index | np.ndarray, among: Iterable) -> np.ndarray:
    """``values.isin(among)`` as a boolean array, through Arrow: 30x faster than pandas 3's string ``isin`` (0.02 s
    instead of 0.64 s over 50,000 paths); missing values are never in."""
    among = among if isinstance(among, (pd.Series, pd.Index, np.ndarray, list)) else list(among)
    found = pc.is_in(pa.array(np.asarray(values, dtype=object), from_pandas=True),
                     value_set=pa.array(np.asarray(among, dtype=object), from_pandas=True), skip_nulls=True)
    return found.fill_null(False).to_numpy(zero_copy_only=False)


def arrow_strings(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Strings as one Arrow large-string array, from pandas' own Arrow data (no Python str per row); a pandas
    column of another type (labels that are all missing, read back from Parquet as floats) as its strs."""
    if isinstance(values, pd.Series) and not (pd.api.types.is_string_dtype(values) or values.dtype == object):
        values = values.astype(str)
    out = pa.array(values, pa.large_string(), from_pandas=True) if isinstance(values, pd.Series) else \
        values.cast(pa.large_string())
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out
