"""The scanned files as refine ``Items``: a class-mixed sample decoded once, every other read chunk by chunk.

Files are read through ``helios.samples.decode_files`` (the one safe reader: regular files only, nothing outside the
input root, the size cap, the decompression-bomb guard). The sample is chosen from the infer stage's labels in the
class-mixed order of ``safety.mixed_order`` (seed ``refine.seed``), at most ``refine.adapt_max_items`` items and
``refine.adapt_max_mb`` of model-ready inputs; a set no larger than that is its own sample, so small sets are refined
exactly as in memory. Re-inference goes to ``RefineContext.reinfer`` when the caller gives one.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from helios.samples import decode_files
from tasks.refine import safety
from tasks.refine.context import RefineContext
from tasks.refine.items import Items, Keys, capped_batch

CHUNK = 256  # files decoded per step while the sample is chosen
# Chunks decoded at once by background threads, ahead of the one being used. One: decoding is mostly Python work
# under the GIL (two decoding threads ran 2.2x slower than one on 2 cores), so the gain is overlap with the torch
# and ONNX Runtime work of the caller, which runs outside the GIL.
DECODERS = 1


def ahead(fn, chunks: list, workers: int = DECODERS):
    """``fn(chunk)`` for each chunk, in order, computed by ``workers`` threads while the caller uses the results
    before: at most ``workers`` results wait, so memory stays a few chunks."""
    if len(chunks) <= 1:
        yield from map(fn, chunks)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="refine-decode") as pool:
        pending = deque(pool.submit(fn, chunk) for chunk in chunks[:workers])
        for chunk in chunks[workers:]:
            done = pending.popleft().result()
            pending.append(pool.submit(fn, chunk))
            yield done
        while pending:
            yield pending.popleft().result()


def open_files(ctx: RefineContext, root: Path, paths: pa.Array, labels: np.ndarray,
               keys: Keys | None = None) -> Items:
    """``paths`` (relative to ``root``, an Arrow string array: no Python str per file is held) as Items; ``labels``
    (the infer stage's, as indices) choose the sample."""
    adapter, cfg = ctx.adapter, ctx.cfg
    name = adapter.input_names[0]
    lost: set[int] = set()

    def decode(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, set[int]]:
        kept, decoded = [], []
        for j, item in decode_files(adapter, [root / p for p in paths.take(positions).to_pylist()], root=root):
            kept.append(int(positions[j]))
            decoded.append(item)
        gone = set(positions.tolist()) - set(kept)
        return np.array(kept, dtype=np.int64), (adapter.collate(decoded)[name] if decoded else None), gone

    def read(positions: np.ndarray, size: int):
        positions = np.asarray(positions, dtype=np.int64)
        chunks = [positions[start:start + size] for start in range(0, len(positions), size)]
        for part, x, gone in ahead(decode, chunks):
            lost.update(gone)
            if len(part):
                yield part, x

    probe = next(read(np.arange(len(paths)), 16), None)  # the first file that decodes tells the input's size
    item_bytes = int(probe[1][0].nbytes) if probe is not None else 1

    def load_sample() -> tuple[np.ndarray, np.ndarray]:
        if probe is None:
            return np.zeros(0, np.int64), np.zeros((0,))
        limit = max(1, min(cfg.adapt_max_items, (cfg.adapt_max_mb << 20) // item_bytes))
        order = safety.mixed_order(labels, np.random.default_rng(cfg.seed))
        out = np.empty((min(limit, len(order)), *probe[1].shape[1:]), dtype=probe[1].dtype)  # filled in place
        chosen, count, tried = [], 0, 0
        while tried < len(order) and count < len(out):  # files that fail are replaced by later ones
            want = np.sort(order[tried:tried + len(out) - count])
            tried += len(want)
            for part, x in read(want, capped_batch(CHUNK, item_bytes)):
                out[count:count + len(part)] = x
                count += len(part)
                chosen.append(part)
        positions = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        rank = np.argsort(positions, kind="stable")
        if (rank == np.arange(count)).all():
            return positions, out[:count]
        return positions[rank], out[:count][rank]  # only after a replacement: a copy

    items = Items(len(paths), load_sample, read, item_bytes, keys=keys, lost=lost)
    if ctx.reinfer is not None:
        items.reinfer = _reinfer(ctx, paths, lost)
        items.vectors = _vectors(ctx, paths, lost)
    return items


def _reinfer(ctx: RefineContext, paths: pa.Array, lost: set[int]):
    """Items.reinfer through ``ctx.reinfer`` (ONNX file, relative paths as an Arrow string array -> table or frame
    of path, status, label, confidence); rows it could not answer are counted as lost. The answers are matched to
    the paths asked for in Arrow (a path answered twice: its first row), without a Python str per file."""
    labels = pa.array(list(ctx.adapter.labels), pa.large_string())

    def reinfer(onnx_path: Path, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wanted = paths.take(np.asarray(positions, dtype=np.int64))
        got = ctx.reinfer(Path(onnx_path), wanted)
        got = got if isinstance(got, pa.Table) else pa.Table.from_pandas(got, preserve_index=False)
        row, answered = _match(wanted, got)
        label = pc.index_in(pc.take(got["label"].cast(pa.large_string()), row), value_set=labels)  # null: unknown
        ok = _lost(positions, pc.and_kleene(answered, pc.is_valid(label)), lost)
        label = pc.fill_null(label, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        confidence = pc.take(got["confidence"], row).to_numpy(zero_copy_only=False).astype(np.float64)
        label[~ok], confidence[~ok] = -1, np.nan
        return label, confidence

    return reinfer


def _match(wanted: pa.Array, got: pa.Table) -> tuple[pa.Array, pa.Array]:
    """For each path asked for, its row in ``got`` (null: no answer; a path answered twice: its first row) and
    whether that row's status is ok (null where there is none)."""
    text = pa.large_string()
    row = pc.index_in(wanted.cast(text), value_set=got["path"].cast(text))
    return row, pc.equal(pc.take(got["status"].cast(text), row), "ok")


def _lost(positions: np.ndarray, ok: pa.Array, lost: set[int]) -> np.ndarray:
    """``ok`` as a numpy mask (null: False); the positions it leaves out are added to ``lost``."""
    ok = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    lost.update(np.asarray(positions)[~ok].tolist())
    return ok


def _vectors(ctx: RefineContext, paths: pa.Array, lost: set[int]):
    """Items.vectors through ``ctx.reinfer(..., vectors=True)`` (a table with path, status and the ``embedding``
    column): one row of the model's ``embeddings`` output per position asked (NaN where no answer came back, counted
    as lost), matched to the paths in Arrow as ``_reinfer`` does."""

    def vectors(onnx_path: Path, positions: np.ndarray) -> np.ndarray:
        wanted = paths.take(np.asarray(positions, dtype=np.int64))
        got = ctx.reinfer(Path(onnx_path), wanted, vectors=True)
        row, answered = _match(wanted, got)
        embedding = got["embedding"].combine_chunks()
        ok = _lost(positions, pc.and_kleene(answered, pc.take(pc.is_valid(embedding), row)), lost)
        # the slots of null rows are in .values too, so the table's rows are one float32 matrix (no copy), and the
        # rows asked for are taken from it once
        table = embedding.values.to_numpy(zero_copy_only=False).reshape(len(embedding), embedding.type.list_size)
        out = table[np.where(ok, row.fill_null(0).to_numpy(zero_copy_only=False), 0)].astype(np.float32, copy=False)
        out[~ok] = np.nan
        return out

    return vectors


def content_keys(hashes: pa.Array | None) -> Keys | None:
    """The rows' content hashes (what reruns key kept answers by), or None when the frame has none or misses one."""
    if hashes is None or hashes.null_count:
        return None
    return Keys(hashes)
