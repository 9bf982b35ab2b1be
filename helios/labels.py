"""True labels (or groups) by path, held compactly: what a labels CSV gives a run.

A Python dict keyed by path costs about 180 bytes a file for the true labels and the groups together (the path str,
two dict entries): 36 MB for 200,000 files, held for the whole run. ``PathLabels`` keeps the paths in one Arrow
array, each label as a small code, and a sorted array of the paths' hashes for single lookups (about 60 bytes a
file); ``lookup`` answers many paths at once in Arrow. It is a read-only ``Mapping``, so code written for a dict
(``get``, ``in``, ``==``) works unchanged.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from helios.frames import arrow_strings


class PathLabels(Mapping):
    """path -> label for the paths of a labels file, in its order (the first row of a path twice wins)."""

    def __init__(self, paths: pa.Array, codes: np.ndarray, names: list[str], hashes: np.ndarray | None = None):
        """``codes[i]`` indexes ``names`` for ``paths[i]`` (-1: no label); ``hashes`` are the paths' ``hash()``
        (computed when not given)."""
        self.paths, self.codes, self.names = paths.cast(pa.large_string()), codes, np.array(names, dtype=object)
        if hashes is None:  # hash() is this process's: the index is never saved
            hashes = np.fromiter((hash(p) for p in self.paths.to_pylist()), np.int64, len(self.paths))
        self._order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[self._order]

    def with_codes(self, codes: np.ndarray, names: list[str]) -> "PathLabels":
        """Other labels (the groups) for the same paths, sharing the paths and their index."""
        other = copy.copy(self)
        other.codes, other.names = codes, np.array(names, dtype=object)
        return other

    def _position(self, path: str) -> int | None:
        h = hash(path)
        start, stop = np.searchsorted(self._hashes, h, "left"), np.searchsorted(self._hashes, h, "right")
        for i in self._order[start:stop]:  # the paths with this hash (almost always one)
            if self.paths[int(i)].as_py() == path:
                return int(i)
        return None

    def __getitem__(self, path: str) -> str:
        i = self._position(path) if isinstance(path, str) else None
        if i is None or self.codes[i] < 0:
            raise KeyError(path)
        return self.names[self.codes[i]]

    def __iter__(self) -> Iterator[str]:
        return (p for p, c in zip(self.paths.to_pylist(), self.codes) if c >= 0)

    def __len__(self) -> int:
        return int((self.codes >= 0).sum())

    def lookup(self, paths: pd.Series | pa.Array) -> np.ndarray:
        """The label of each of ``paths`` as an object array (None where a path has none), matched in Arrow."""
        wanted = arrow_strings(paths)
        row = pc.index_in(wanted, value_set=self.paths).to_numpy(zero_copy_only=False)  # NaN: not in the file
        found = ~np.isnan(row)
        codes = np.full(len(wanted), -1, dtype=np.int64)
        codes[found] = self.codes[row[found].astype(np.int64)]
        out = np.full(len(wanted), None, dtype=object)
        out[codes >= 0] = self.names[codes[codes >= 0]]
        return out


def labels_of(mapping: Mapping, paths: pd.Series | pa.Array) -> np.ndarray:
    """The label of each of ``paths`` (None where it has none) as an object array: in Arrow for a ``PathLabels``
    (no dict of every path is built), one lookup a path for any other mapping."""
    if isinstance(mapping, PathLabels):
        return mapping.lookup(paths)
    values = paths.to_pylist() if isinstance(paths, (pa.Array, pa.ChunkedArray)) else list(paths)
    return np.array([mapping.get(p) for p in values], dtype=object)
