"""TTA over the items a round routes to it, chunk by chunk, never the whole set at once.

With content hashes (``Items.keys``) and a memo, the answers are written as Parquet parts of ``PART_ITEMS`` under the
work folder, keyed by the model file's hash, the policy and the merge mode: a rerun, or a run killed half-way, takes
those answers as they are and augments only the rest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tasks.refine import tta
from tasks.refine.items import Keys, capped_batch
from tasks.refine.memo import write_table
from tasks.refine.state import Run

CHUNK_BATCHES = 8  # batches decoded ahead of one another: a chunk's inputs are all that is held
PART_ITEMS = 2048  # answers per cache part: a kill loses at most these


class TtaCache:
    """Answers per content hash from earlier chunks, read once; ``add`` writes one more part."""

    def __init__(self, folder: Path):
        self.folder = folder
        parts = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        frames = [pq.read_table(p).to_pandas() for p in parts]
        table = pd.concat(frames) if frames else pd.DataFrame({"key": [], "label": [], "confidence": []})
        self.known = table.drop_duplicates("key", keep="last").set_index("key")
        self.parts, self.pending = len(parts), []

    def lookup(self, keys: Keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found mask, labels, confidences) for ``keys``."""
        got = self.known.reindex(np.asarray(keys))
        found = got["label"].notna().to_numpy()
        return found, got["label"].fillna(-1).to_numpy(np.int64), got["confidence"].to_numpy(np.float64)

    def add(self, keys: Keys, labels: np.ndarray, conf: np.ndarray) -> None:
        """Keep a chunk's answers; they are written as a part once ``PART_ITEMS`` have gathered (and by ``flush``)."""
        self.pending.append((np.asarray(keys).astype(str), labels.astype(np.int64), conf.astype(np.float64)))
        if sum(len(k) for k, _, _ in self.pending) >= PART_ITEMS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            keys, labels, conf = (np.concatenate(c) for c in zip(*self.pending))
            write_table({"key": keys, "label": labels, "confidence": conf}, self.folder / f"{self.parts:06d}.parquet")
            self.parts, self.pending = self.parts + 1, []


def augment_items(run: Run, policy: tta.Policy, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions answered, labels, confidences) of TTA with the current model over items ``idx``; a file that no
    longer decodes is left out."""
    cfg, items, memo = run.ctx.cfg, run.items, run.items.memo
    cache = None
    positions, labels, conf = [], [], []
    todo = idx
    if memo is not None and items.keys is not None:
        cache = TtaCache(run.ctx.work_dir / "tta" / f"{memo.sha(run.model_path)[:16]}-{policy.name}-{policy.merge}")
        found, lab, con = cache.lookup(items.keys[idx])
        positions, labels, conf, todo = [idx[found]], [lab[found]], [con[found]], idx[~found]
    size = capped_batch(cfg.batch_size, items.item_bytes, policy.size)
    for part, x in items.read(todo, size * CHUNK_BATCHES):
        probs = tta.predict_tta(run.session.run, run.ctx.adapter.input_names[0], x, policy, size)
        positions.append(part)
        labels.append(probs.argmax(1))
        conf.append(probs.max(1))
        if cache is not None:
            cache.add(items.keys[part], labels[-1], conf[-1])
    if cache is not None:
        cache.flush()
    if not positions:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(positions), np.concatenate(labels).astype(np.int64), np.concatenate(conf)
