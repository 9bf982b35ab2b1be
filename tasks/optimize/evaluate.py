"""Measure a variant on the sample: latency at batch 1, throughput per batch size, peak memory, outputs.

Throughput: a first pass per batch size when the variant is opened, then further passes that the stage's ranking
(``tasks.optimize.rank``) interleaves over the variants still in the running, keeping each one's best — on a shared
machine a burst of load would otherwise decide the winner. Throughput passes run over a timing subset spread evenly
over the sample; a pass repeats until it has run ``MIN_TIMED_S``: 256 digits at batch 128 are two runs and ~20 ms,
too short to time (the stage once ranked int8-static 0.96x fp32 that way, where the benchmark measures 1.34x).
The quality pass (every item once, at the quality batch size) is timed too: when it ran at least ``MIN_TIMED_S`` it
is the first figure at that batch size, and no separate first pass is run there. A lossless variant (``subset``)
runs its quality pass over the timing subset only.

Peak memory is the growth of this process's resident set (RSS) over its level just before the session is
created, sampled every 2 ms on a helper thread while the session is built and runs; freed heap is handed back
to the OS first (glibc ``malloc_trim``) so freed memory does not hide the next variant's growth (sessions opened
earlier stay open for the interleaved rounds; their memory is part of the baseline). It covers
weights, ORT's arena and activations on the host; on CUDA, device memory is not in it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from helios.heap import trim_heap
from helios.models.base import Decoded, ModelAdapter


@dataclass(frozen=True)
class Measured:
    latency_ms: tuple[float | None, float | None, float | None]  # p50, p95, p99 at batch 1 (None: not timed)
    throughput_by_batch: dict[int, float]
    peak_mem_mb: float | None
    outputs: list[np.ndarray] = field(default_factory=list)  # all outputs over the sample, in sample order

    @property
    def best_batch(self) -> int | None:
        if not self.throughput_by_batch:
            return None
        return max(self.throughput_by_batch, key=self.throughput_by_batch.__getitem__)


class PeakRss:
    """Context manager: ``.peak_mb`` is the largest RSS growth seen while inside (see module docstring)."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s, self.peak_mb = interval_s, None
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        import psutil

        trim_heap()
        self._proc = psutil.Process()
        self._base = self._max = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._max = max(self._max, self._proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._proc.memory_info().rss)
        self.peak_mb = round((self._max - self._base) / 2**20, 1)


MIN_TIMED_S = 0.1
# The quality pass over text runs at batch 8: length-sorted MiniLM batches of 32 ran at half the per-item rate of 8
# on 2 cores (attention's activations outgrow the cache), and the pass is a fifth of the stage's time.
TEXT_QUALITY_BATCH = 8


def items_per_s(run_all: Callable[[], object], n_items: int, min_s: float = MIN_TIMED_S) -> float:
    """Throughput of ``run_all`` (one pass over ``n_items``), repeated until at least ``min_s`` has passed."""
    passes, start = 0, time.perf_counter()
    while True:
        run_all()
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return round(n_items * passes / elapsed, 2)


@dataclass(frozen=True)
class Workload:
    """The sample collated once for every variant: single items for latency, batches per size for throughput (over
    the timing subset), and every item once for quality (the largest batch size; text: at most 8)."""

    items: list[Decoded]
    singles: list[dict[str, np.ndarray]]
    batches: dict[int, list[dict[str, np.ndarray]]]
    whole: list[dict[str, np.ndarray]]  # every item once, for quality
    timed_items: int  # items in each throughput pass (the timing subset)
    quality_batch: int = 32  # the batch size of ``whole`` (and ``timed_whole``)
    timed_whole: list[dict[str, np.ndarray]] = field(default_factory=list)  # the timing subset at quality_batch
    timed_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # its positions in ``items``


def workload(adapter: ModelAdapter, items: list[Decoded], batch_sizes: tuple[int, ...], latency_runs: int,
             timing_items: int | None = None) -> Workload:
    """Collate ``items`` (already in batching order); latency items and the timing subset (``timing_items``, at least
    two of the largest batches) are spread evenly over the whole sample, so they keep its mix of sizes."""
    big = max(batch_sizes)
    n_timed = len(items) if timing_items is None else min(len(items), max(timing_items, 2 * big))
    timed_idx = np.array([i * len(items) // n_timed for i in range(n_timed)], dtype=np.int64)
    timed = [items[i] for i in timed_idx]
    runs = min(latency_runs, len(items))
    singles = [adapter.collate([items[i * len(items) // runs]]) for i in range(runs)]
    batches = {b: [adapter.collate(timed[i:i + b]) for i in range(0, n_timed, b)] for b in batch_sizes if b > 1}
    size = (min(big, TEXT_QUALITY_BATCH) if adapter.modality == "text" else big) if big > 1 else 32
    whole = [adapter.collate(items[i:i + size]) for i in range(0, len(items), size)]
    timed_whole = [adapter.collate(timed[i:i + size]) for i in range(0, n_timed, size)]
    return Workload(items, singles, batches, whole, n_timed, size, timed_whole, timed_idx)


def run_batch_sizes(adapter: ModelAdapter, items: list[Decoded], sizes: tuple[int, ...],
                    providers: tuple[str, ...]) -> tuple[tuple[int, ...], str | None]:
    """The batch sizes worth timing, and why others are not. On CPU the infer stage's batches are capped
    (``tasks.infer.engine``): text batches at ``CPU_MAX_BATCH_TOKENS`` padded tokens, image batches at
    ``CPU_MAX_BATCH_BYTES`` of inputs; a batch size above what the cap lets through for this sample (its median text
    length, its image size) is never run there, and timing it could only mislead the ranking and hold memory."""
    if "CUDAExecutionProvider" in providers or not items:
        return sizes, None
    from tasks.infer.engine import CPU_MAX_BATCH_BYTES, CPU_MAX_BATCH_TOKENS, image_batch_cap, input_bytes

    if adapter.modality == "text":
        tokens = int(np.median([next(iter(adapter.collate([item]).values())).shape[-1] for item in items]))
        cap = max(1, CPU_MAX_BATCH_TOKENS // max(tokens, 1))
        why = (f"text batches hold at most {CPU_MAX_BATCH_TOKENS} padded tokens, about {cap} of this sample's texts "
               f"(median {tokens} tokens)")
    else:
        cap = image_batch_cap(input_bytes(adapter, items[0]))
        why = f"image batches hold at most {CPU_MAX_BATCH_BYTES >> 20} MB of inputs, {cap} of these images"
    kept = tuple(b for b in sizes if b <= cap) or (min(sizes),)
    if kept == sizes:
        return sizes, None
    left = [b for b in sizes if b not in kept]
    return kept, f"batch sizes {left} not timed: on CPU the infer stage's {why}"


def measure(open_fn: Callable[[], object], work: Workload,
            worth_timing: Callable[[list[np.ndarray]], bool] = lambda outputs: True,
            subset: bool = False) -> tuple[object, Measured]:
    """Open the variant with ``open_fn``; its outputs over the whole sample (``subset``: the timing subset) for
    quality, then, when ``worth_timing(outputs)`` (a variant outside the quality budget cannot be chosen), latency at
    batch 1 and a first timed pass per batch size (the quality pass is the one at its batch size when it ran long
    enough to time); peak memory throughout."""
    with PeakRss() as mem:
        runner = open_fn()
        for feed in work.singles[:3]:
            runner.run(feed)  # warm-up: first runs allocate and pick kernels
        feeds, n_items = (work.timed_whole, work.timed_items) if subset else (work.whole, len(work.items))
        start = time.perf_counter()
        outputs = run_outputs(runner, feeds)
        quality_s = time.perf_counter() - start
        if not worth_timing(outputs):
            return runner, Measured((None, None, None), {}, mem.peak_mb, outputs)
        times = []
        for feed in work.singles:
            t = time.perf_counter()
            runner.run(feed)
            times.append(time.perf_counter() - t)
        lat = np.array(times) * 1000
        throughput = {1: round(len(times) / float(np.sum(times)), 2)}
        for size in work.batches:
            if size == work.quality_batch and quality_s >= MIN_TIMED_S:
                throughput[size] = round(n_items / quality_s, 2)
                continue
            runner.run(work.batches[size][0])
            throughput[size] = time_pass(runner, work, size)
    p50, p95, p99 = (round(float(np.percentile(lat, q)), 3) for q in (50, 95, 99))
    return runner, Measured((p50, p95, p99), throughput, mem.peak_mb, outputs)


def time_pass(runner, work: Workload, size: int) -> float:
    """One timed pass at batch ``size`` (batch 1: the latency items), repeated up to ``MIN_TIMED_S``; items/s."""
    if size == 1:
        return items_per_s(lambda: [runner.run(f) for f in work.singles], len(work.singles))
    return items_per_s(lambda: [runner.run(f) for f in work.batches[size]], work.timed_items)


def run_outputs(runner, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """All outputs over ``feeds`` (e.g. ``Workload.whole``: the sample) in item order."""
    results = [runner.run(f) for f in feeds]
    return [np.concatenate(parts) for parts in zip(*results)]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def quality(task: str, got: list[np.ndarray], ref: list[np.ndarray], truth_idx: np.ndarray | None) -> dict:
    """Agreement of top-1 with the reference (and mean/min cosine of embeddings for embedders), accuracy if labelled."""
    out = {"agreement": float((got[0].argmax(1) == ref[0].argmax(1)).mean())}
    if task == "embedder":
        cos = cosine(got[1].astype(np.float64), ref[1].astype(np.float64))
        out.update(cosine=float(cos.mean()), min_cosine=float(cos.min()))
    if truth_idx is not None and (truth_idx >= 0).any():
        known = truth_idx >= 0
        out["accuracy"] = float((got[0].argmax(1)[known] == truth_idx[known]).mean())
    return out
