"""The items one refine call works on: how many, the decoded sample adaptation learns from, and how to get the rest.

Refinement never needs the whole set in memory at once: adaptation, its guards, the mixture check and the parity
sample use a bounded sample; re-inference and TTA take the items they need in chunks. ``Items.of_array`` wraps a
model-ready batch (the evaluation scripts: the sample is the whole batch, so their results are those of the
in-memory code before streaming); ``tasks.refine.stream.open_files`` reads files instead. No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

# One forward pass gets at most this many bytes of inputs: 224x224 RGB float32 -> 13 items, 28x28 grey -> 2,675
# (the configured batch size, 256, applies). Answers do not depend on the batch size, only the memory does: BN-adapt
# measures a 224x224 ResNet layer in float64, 6.4 MB per item at its first BatchNorm.
BATCH_BYTES = 8 << 20
KEEP_SAMPLE_BYTES = 64 << 20  # a sample this large is freed during re-inference and decoded again when needed

Reader = Callable[[np.ndarray, int], Iterator[tuple[np.ndarray, np.ndarray]]]
Reinfer = Callable[[Path, np.ndarray], tuple[np.ndarray, np.ndarray]]
Vectors = Callable[[Path, np.ndarray], np.ndarray]


class Keys:
    """Content hashes of items, held in Arrow (64 bytes an item instead of a 113-byte Python str and a pointer).
    ``keys[idx]`` is another ``Keys``; ``np.asarray(keys)`` gives the strs, made only for the caller's moment."""

    def __init__(self, values: pa.Array):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, idx) -> "Keys":
        return Keys(self.values.take(pa.array(np.asarray(idx, dtype=np.int64))))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.values.to_numpy(zero_copy_only=False)
        return out if dtype is None else out.astype(dtype)


def capped_batch(batch_size: int, item_bytes: int, copies: int = 1) -> int:
    """``batch_size``, lowered so that ``copies`` views of a batch stay within ``BATCH_BYTES``."""
    return max(1, min(batch_size, BATCH_BYTES // max(1, item_bytes * copies)))


@dataclass
class Items:
    """``n`` items: ``load_sample`` gives (sorted positions, model-ready inputs) of the adaptation sample, on first
    use; ``read(positions, size)`` yields (positions that decoded, inputs) chunks of at most ``size``; ``reinfer``
    (None: in-process sessions) answers positions with an ONNX file through the caller's machinery, as label
    indices and confidences (-1 and NaN where it gave no answer); ``vectors`` the same way gives a model's
    ``embeddings`` output (NaN rows where no answer; ``tasks.refine.routed``); ``keys`` are content hashes (None:
    nothing is kept for reruns); ``memo`` keeps adaptation steps and TTA answers for reruns (``tasks.refine.memo``);
    ``ahead`` holds answers of a model given before it is asked (``answer_ahead``)."""

    n: int
    load_sample: Callable[[], tuple[np.ndarray, np.ndarray]]
    read: Reader
    item_bytes: int
    reinfer: Reinfer | None = None
    keys: Keys | None = None
    memo: object = None
    lost: set = field(default_factory=set)  # positions that no longer decode (left as inferred)
    parent: "Items | None" = None  # the set this one is a subset of (it holds the decoded sample too)
    vectors: Vectors | None = None
    ahead: dict = field(default_factory=dict)  # ONNX file -> (answered mask, labels, confidences) over the items
    _idx: np.ndarray | None = field(default=None, repr=False)  # a subset's positions in its parent
    _sample: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def of_array(cls, x: np.ndarray) -> "Items":
        """A model-ready batch held in memory: the sample is every item."""
        def read(positions: np.ndarray, size: int):
            for start in range(0, len(positions), size):
                part = positions[start:start + size]
                yield part, x[part]

        n = len(x)
        return cls(n, lambda: (np.arange(n), x), read, int(x[0].nbytes) if n else 1)

    def _loaded(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sample is None:
            self._sample = self.load_sample()
        return self._sample

    def drop_sample(self) -> None:
        """Free a large decoded sample while other work runs (re-inference); it is decoded again when next used."""
        if self._sample is not None and self._sample[1].nbytes >= KEEP_SAMPLE_BYTES:
            self._sample = None
        if self.parent is not None:
            self.parent.drop_sample()

    def answer_ahead(self, path: Path, labels: np.ndarray, confidences: np.ndarray, positions: np.ndarray) -> None:
        """Keep answers of the model at ``path`` for ``positions``: ``answered`` returns them instead of asking."""
        mask, lab, conf = self.ahead.setdefault(Path(path), (np.zeros(self.n, bool), np.full(self.n, -1, np.int64),
                                                               np.full(self.n, np.nan)))
        mask[positions], lab[positions], conf[positions] = True, labels, confidences

    def answered(self, path: Path, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(answered mask, labels, confidences) of ``positions`` as kept by ``answer_ahead`` (on this set or the one
        it is a subset of), or None when the model at ``path`` answered nothing ahead."""
        if self.parent is not None:
            return self.parent.answered(path, self._idx[positions])
        got = self.ahead.get(Path(path))
        if got is None:
            return None
        return got[0][positions], got[1][positions], got[2][positions]

    @property
    def sample_idx(self) -> np.ndarray:
        """Sorted positions of the sample's items."""
        return self._loaded()[0]

    @property
    def sample(self) -> np.ndarray:
        """The sample's model-ready inputs, in ``sample_idx`` order."""
        return self._loaded()[1]

    def subset(self, idx: np.ndarray) -> "Items":
        """The items at sorted positions ``idx`` as a set of their own (positions renumbered from 0)."""
        idx = np.asarray(idx, dtype=np.int64)
        parent = self

        def load_sample():
            inside = np.isin(parent.sample_idx, idx)
            return np.searchsorted(idx, parent.sample_idx[inside]), parent.sample[inside]

        def read(positions: np.ndarray, size: int):
            for part, x in parent.read(idx[positions], size):
                yield np.searchsorted(idx, part), x

        reinfer = None if self.reinfer is None else (lambda path, positions: parent.reinfer(path, idx[positions]))
        vectors = None if self.vectors is None else (lambda path, positions: parent.vectors(path, idx[positions]))
        keys = None if self.keys is None else self.keys[idx]
        return Items(len(idx), load_sample, read, self.item_bytes, reinfer, keys, self.memo, self.lost, parent,
                     vectors, _idx=idx)
