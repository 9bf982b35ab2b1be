"""The one reader of sample files for the stages that decode files themselves after the scan (prepare's parity
sample, optimize's evaluation and calibration sample, refine's inputs).

A file that cannot be read or decoded is skipped here: the infer stage gives it an error row with the reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from helios.models.base import Decoded, InputError, ModelAdapter


def decode_files(adapter: ModelAdapter, paths: Iterable[Path | str], limit: int | None = None
                 ) -> Iterator[tuple[int, Decoded]]:
    """(position in ``paths``, decoded item) for each usable file, until ``limit`` items have been decoded."""
    found = 0
    for position, path in enumerate(paths):
        if limit is not None and found >= limit:
            return
        try:
            item = adapter.preprocess(Path(path).read_bytes())
        except (InputError, OSError):
            continue
        found += 1
        yield position, item
