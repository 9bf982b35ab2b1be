"""The per-process inference engine: one adapter and one ONNX Runtime session, reused by every shard.

Batches that fail to allocate (CUDA OOM, MemoryError) are split in half and retried; the smaller size is remembered
for the rest of the process, so no file is ever dropped for lack of memory.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from helios.models import Decoded, ModelAdapter, load_model
from tasks.infer.model_ref import ModelRef
from tasks.session import CUDA_EP, Session, open_session, saved_optimized_for

log = logging.getLogger(__name__)

_ALLOCATION_MARKERS = ("out of memory", "failed to allocate", "bad_alloc", "cudaerrormemoryallocation",
                       "available memory", "arena")
_ENGINES: dict[tuple, "Engine"] = {}
_LOCK = threading.Lock()
LOADS = {"count": 0}  # engines built in this process: tests check "loaded once per worker"
TEXT_BUCKET_BATCHES = 32  # texts are sorted by token length within a window of this many batches (8: 8% padding)
# On CPU a text batch holds at most this many padded tokens: minilm int8 on 2 cores ran 104-106 texts/s with
# budgets of 1-1024 tokens and 90/s at 8192 (batch 64 x 128): activations larger than the caches cost more than
# the per-call overhead saved. GPUs want large batches: there the budget is batch size x 128.
CPU_MAX_BATCH_TOKENS = 1024
# On CPU an image batch holds at most this many bytes of model inputs (224x224 RGB float32: 27 images, 28x28 grey:
# the requested size applies). ONNX Runtime's arena keeps the largest batch's activations for the session's life, and
# a ResNet-18 at batch 64 of 224x224 holds about 0.2 GB in its first convolution's output alone; conv nets on a CPU
# run at the same rate per image from a few dozen images on (see the README's refine-at-scale section).
CPU_MAX_BATCH_BYTES = 16 << 20
PREFETCH_BYTES = 64 << 20  # decoded image batches waiting in a shard's prefetch queue (at least two batches)


def input_bytes(adapter: ModelAdapter, item: Decoded) -> int:
    """Bytes of one item as the model takes it (collated alone)."""
    return sum(v.nbytes for v in adapter.collate([item]).values())


def image_batch_cap(item_bytes: int) -> int:
    """How many items of ``item_bytes`` a CPU image batch holds (``CPU_MAX_BATCH_BYTES``)."""
    return max(1, CPU_MAX_BATCH_BYTES // max(1, item_bytes))


def is_allocation_failure(exc: BaseException) -> bool:
    """MemoryError, or an ONNX Runtime error whose message says an allocation failed."""
    if isinstance(exc, MemoryError):
        return True
    return any(marker in str(exc).lower() for marker in _ALLOCATION_MARKERS)


def _slice(feeds: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    return {k: v[start:stop] for k, v in feeds.items()}


@dataclass
class Engine:
    adapter: ModelAdapter
    session: Session
    logits_name: str = "logits"
    max_batch: int | None = None  # set when a batch failed to allocate: the working size from then on
    halvings: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _slots: dict = field(default_factory=dict, repr=False)

    def run(self, feeds: dict[str, np.ndarray], extra: tuple[str, ...] = ()):
        """Logits for one batch; with ``extra`` output names, (logits, *those outputs). A session with CUDA first
        runs through IO binding (``tasks.session.run_bound``); any other exactly as before."""
        outputs = self.session.run(feeds, [self.logits_name, *extra])
        return tuple(outputs) if extra else outputs[0]

    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.session.session.get_outputs())

    def predict(self, feeds: dict[str, np.ndarray], extra: tuple[str, ...] = ()):
        """Logits (and ``extra`` outputs) for one batch; on an allocation failure, halve and retry both halves."""
        n = len(next(iter(feeds.values())))
        try:
            return self.run(feeds, extra) if extra else self.run(feeds)
        except Exception as exc:  # ORT raises its own non-RuntimeError classes; only allocation failures are retried
            if n <= 1 or not is_allocation_failure(exc):
                raise
        half = n // 2
        with self._lock:
            if self.max_batch is None or half < self.max_batch:
                self.max_batch = half
                self.halvings += 1
                log.warning("batch of %d failed to allocate; halving to %d and retrying", n, half)
        first, second = self.predict(_slice(feeds, 0, half), extra), self.predict(_slice(feeds, half, n), extra)
        if not extra:
            return np.concatenate([first, second])
        return tuple(np.concatenate([a, b]) for a, b in zip(first, second))

    def slots(self, n: int) -> threading.Semaphore:
        """The process-wide limit of ``n`` runs in flight on this engine (shared by every shard's runners)."""
        with self._lock:
            return self._slots.setdefault(max(1, n), threading.BoundedSemaphore(max(1, n)))

    def batch_size(self, requested: int, item_bytes: int = 0) -> int:
        """The requested size, or the remembered working size after an allocation failure; on a CPU session, items
        of ``item_bytes`` (images) are also capped at ``CPU_MAX_BATCH_BYTES`` per batch."""
        size = min(requested, self.max_batch or requested)
        if item_bytes and CUDA_EP not in self.session.actual:
            size = min(size, image_batch_cap(item_bytes))
        return size

    def batches(self, idxs: list[int], items: list[Decoded], size: int) -> Iterator[tuple[list[int], dict]]:
        """Collated batches of at most ``size``; texts bucketed by token length to cut padding."""
        tokenizer = getattr(self.adapter, "tokenizer", None)
        if self.adapter.modality != "text" or tokenizer is None:
            for s in range(0, len(items), size):
                yield idxs[s:s + size], self.adapter.collate(items[s:s + size])
            return
        max_tokens = None if CUDA_EP in self.session.actual else CPU_MAX_BATCH_TOKENS
        yield from bucket_texts(unpadded_tokenizer(self.adapter), idxs, [d.value for d in items], size,
                                max_tokens=max_tokens)


_UNPADDED: dict[int, object] = {}


def unpadded_tokenizer(adapter) -> object:
    """A copy of the adapter's fast tokenizer (same truncation at the model's max length) without padding."""
    key = id(adapter)
    if key not in _UNPADDED:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(adapter.tokenizer().to_str())
        tok.no_padding()
        _UNPADDED[key] = tok
    return _UNPADDED[key]


def bucket_texts(tokenizer, idxs: list[int], texts: list[str], size: int, tokens_per_row: int = 128,
                 max_tokens: int | None = None):
    """Tokenize once, sort by length, pad each batch only to its own longest sequence.

    A batch holds at most ``size`` texts and ``size * tokens_per_row`` padded tokens (at most ``max_tokens``), so
    batches of long texts are smaller: attention memory grows with the square of the length, and ORT's arena
    keeps its peak. A text longer than the budget gets a batch of its own.
    """
    encodings = tokenizer.encode_batch(texts)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    order = np.argsort(lengths, kind="stable")
    budget, s = size * tokens_per_row, 0
    if max_tokens is not None:
        budget = min(budget, max_tokens)
    while s < len(order):
        width = int(lengths[order[s]])
        e = s
        while e < len(order) and e - s < size and int(lengths[order[e]]) * (e - s + 1) <= max(budget, width):
            e += 1
        chosen = order[s:e]
        width = int(lengths[chosen[-1]])
        ids = np.zeros((len(chosen), width), dtype=np.int64)
        mask = np.zeros((len(chosen), width), dtype=np.int64)
        for row, j in enumerate(chosen):
            enc = encodings[j]
            ids[row, :len(enc.ids)] = enc.ids
            mask[row, :len(enc.ids)] = enc.attention_mask
        yield [idxs[j] for j in chosen], {"input_ids": ids, "attention_mask": mask}
        s = e


def get_engine(ref: ModelRef) -> Engine:
    """This process's engine for ``ref``, built on first use (one session per worker process)."""
    key = (ref.identity, ref.onnx_path, ref.providers, ref.intra_op_threads)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            adapter = load_model(ref.model)
            session = open_session(ref.onnx_path, ref.providers, ref.intra_op_threads, 1,
                                   optimized=saved_optimized_for(ref.onnx_path, ref.providers))
            names = [o.name for o in session.session.get_outputs()]
            engine = Engine(adapter, session, "logits" if "logits" in names else names[0])
            _ENGINES[key] = engine
            LOADS["count"] += 1
            log.info("loaded %s (%s) in process %d", ref.model.name, ref.variant, os.getpid())
        return engine


def release_engines(identity: str | None = None) -> int:
    """Drop this process's engines of a model identity (None: all of them), e.g. once a stage is done with a model
    that will not run here again; their sessions and ONNX Runtime memory go with them. Returns how many were dropped."""
    with _LOCK:
        keys = [key for key in _ENGINES if identity is None or key[0] == identity]
        for key in keys:
            del _ENGINES[key]
    return len(keys)
