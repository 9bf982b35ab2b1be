"""The one reader of sample files for the stages that decode files themselves after the scan (prepare's parity
sample, optimize's evaluation and calibration sample, refine's inputs).

Every file goes through ``helios.reader.SafeReader`` (regular files only, nothing outside the input root, the size
cap) and the adapter's decoder (the decompression-bomb guard, ``model.max_image_pixels``). A file that is refused or
cannot be decoded is skipped here: the infer stage gives it an error row with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from helios.models.base import Decoded, InputError, ModelAdapter
from helios.reader import DEFAULT_MAX_BYTES, RefusedFile, SafeReader, common_root


def decode_files(adapter: ModelAdapter, paths: Iterable[Path | str], limit: int | None = None,
                 root: Path | str | None = None, max_bytes: int = DEFAULT_MAX_BYTES
                 ) -> Iterator[tuple[int, Decoded]]:
    """(position in ``paths``, decoded item) for each usable file, until ``limit`` items have been decoded.

    ``root`` is the input root no file may leave (a symlink pointing out of it is skipped); without one, the
    narrowest directory that holds all ``paths`` (callers that know the input root should pass it).
    """
    paths = list(paths)
    reader = SafeReader(root if root is not None else common_root(paths), max_bytes)
    found = 0
    for position, path in enumerate(paths):
        if limit is not None and found >= limit:
            return
        try:
            item = adapter.preprocess(reader.read(os.fspath(path)))
        except (InputError, OSError, RefusedFile):
            continue
        found += 1
        yield position, item


def order_for_batching(adapter: ModelAdapter, items: list[Decoded]) -> list[int]:
    """Text is batched by length (as the infer stage buckets it), so padding does not dominate; images keep order."""
    if adapter.modality != "text":
        return list(range(len(items)))
    return sorted(range(len(items)), key=lambda i: len(str(items[i].value)))
