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
