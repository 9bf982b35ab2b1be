"""What the refinement rounds share: the per-item outcome, the ledger behind the report's figures, the record of one
set's run and the helpers that fill the outcome's columns. No torch here."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helios.models.base import softmax
from tasks.refine.context import RefineContext
from tasks.refine.items import Items, capped_batch


@dataclass
class Compute:
    """Work done by one method, in items: one forward (or backward) pass of one item counts 1."""

    forward: int = 0
    backward: int = 0
    seconds: float = 0.0

    def add(self, other: "Compute") -> None:
        """Add ``other``'s passes and seconds to these."""
        self.forward += other.forward
        self.backward += other.backward
        self.seconds += other.seconds


@dataclass
class Outcome:
    """Per-item results (arrays over the items given) and the report section."""

    label: np.ndarray
    confidence: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # ttt_label, ttt_confidence, tta_label, ...
    method: np.ndarray | None = None  # '+'-joined methods that produced each item's answer ('' = untouched)
    summary: dict = field(default_factory=dict)

    @classmethod
    def start(cls, label: np.ndarray, confidence: np.ndarray) -> "Outcome":
        """An outcome that holds copies of the infer stage's answers, no item touched yet."""
        return cls(np.asarray(label).copy(), np.asarray(confidence, dtype=np.float64).copy(),
                   method=np.full(len(label), "", dtype=object))


class Ledger:
    """Per-method counts for the report: items touched, labels changed, accuracy around it, compute."""

    def __init__(self, n: int, truth: np.ndarray | None):
        self.n, self.truth, self.methods = n, truth, {}
        self._touched: dict[str, np.ndarray] = {}  # per adapting method: every item it re-inferred, over all rounds
        self.checks: dict[str, dict] = {}  # compute spent deciding what to run (not a method: answers no item)

    def charge(self, check: str, compute: Compute) -> None:
        """Count a check's passes in the compute budget and the reported multiplier."""
        c = self.checks.setdefault(check, {"forward_passes": 0, "seconds": 0.0})
        c["forward_passes"] += int(compute.forward)
        c["seconds"] = round(c["seconds"] + compute.seconds, 3)
        c["multiplier"] = round(c["forward_passes"] / max(self.n, 1), 3)

    def accuracy(self, labels: np.ndarray) -> float | None:
        """Share of the items with a known truth that ``labels`` gets right (None without truth)."""
        if self.truth is None or not (self.truth >= 0).any():
            return None
        known = self.truth >= 0
        return round(float((labels[known] == self.truth[known]).mean()), 4)

    def record(self, method: str, touched: np.ndarray, before: np.ndarray, after: np.ndarray, compute: Compute) -> None:
        """Add one step of ``method`` (the items it touched, the labels before and after it, its compute)."""
        m = self.methods.setdefault(method, {"touched": 0, "changed": 0, "accuracy_before": self.accuracy(before),
                                             "forward_passes": 0, "backward_passes": 0, "seconds": 0.0})
        if method == "tta":  # augmentations: an item augmented again with a newer model counts again
            m["touched"] += int(touched.sum())
        else:
            seen = self._touched.setdefault(method, np.zeros(self.n, dtype=bool))
            seen |= touched
            m["touched"] = int(seen.sum())
        m["changed"] += int((before[touched] != after[touched]).sum())
        m["accuracy_after"] = self.accuracy(after)
        m["forward_passes"] += int(compute.forward)
        m["backward_passes"] += int(compute.backward)
        m["seconds"] = round(m["seconds"] + compute.seconds, 3)
        # A backward pass costs about two forward passes; plain inference is one forward pass per item.
        m["multiplier"] = round((m["forward_passes"] + 2 * m["backward_passes"]) / max(self.n, 1), 3)

    def spent(self) -> float:
        """Compute spent so far, in passes per item over plain inference (methods and checks)."""
        return sum(m["multiplier"] for m in [*self.methods.values(), *self.checks.values()])


class GroupLedger:
    """The whole set's ledger as one group of it sees it: the group's arrays are placed into whole-set arrays that
    hold the other items' current answers."""

    def __init__(self, ledger: Ledger, idx: np.ndarray, current: np.ndarray):
        self.ledger, self.idx, self.current = ledger, idx, current

    def _whole(self, local: np.ndarray) -> np.ndarray:
        whole = self.current.copy()
        whole[self.idx] = local
        return whole

    @property
    def methods(self) -> dict:
        """The whole set's per-method figures."""
        return self.ledger.methods

    def record(self, method: str, touched: np.ndarray, before: np.ndarray, after: np.ndarray, compute: Compute) -> None:
        """``Ledger.record`` with the group's arrays placed into the whole set."""
        mask = np.zeros(self.ledger.n, dtype=bool)
        mask[self.idx] = touched
        self.ledger.record(method, mask, self._whole(before), self._whole(after), compute)

    def accuracy(self, labels: np.ndarray) -> float | None:
        """The whole set's accuracy with the group's ``labels`` in place."""
        return self.ledger.accuracy(self._whole(labels))

    def spent(self) -> float:
        """The whole set's compute so far (one budget for all groups)."""
        return self.ledger.spent()


@dataclass
class Step:
    """What one round's torch work left: the adaptation state (``ttt.Adaptation``), compute per method, BN-adapt's
    own labels as (positions, labels) on the sample (None when it did not run), the adapted ONNX file (None: no new
    model to re-infer with) and the seconds its export took."""

    state: object
    computes: dict[str, Compute]
    bn: tuple[np.ndarray, np.ndarray] | None
    path: Path | None
    export_seconds: float = 0.0


@dataclass
class Run:
    """One set's refinement run: its items, the model answers come from and what TTA already augmented."""

    ctx: RefineContext
    items: Items
    session: object = None  # the ONNX session answers come from (source, then adapted)
    module: object = None  # the torch module to adapt (None: no TTT)
    rng: np.random.Generator | None = None
    model_path: Path | None = None  # the ONNX file of ``session``
    model_version: int = 0  # bumped whenever the session's model changes
    tta_done: np.ndarray | None = None  # per item, the model_version it was augmented with (-1: never)

    def __post_init__(self) -> None:
        if self.tta_done is None:
            self.tta_done = np.full(self.items.n, -1, dtype=np.int64)

    def infer(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, Compute]:
        """Labels and confidences of items ``idx`` from the current model (-1 and NaN where no answer came back:
        a file that no longer decodes), and the compute it took. With ``items.reinfer`` the caller's machinery
        answers (the infer stage's shards, index and cache); else this process's session, chunk by chunk."""
        start = time.perf_counter()
        ahead = self.items.answered(self.model_path, idx)
        if ahead is not None:  # answered by the pass that placed a mixed set's files (``tasks.refine.routed``)
            done, label, conf = ahead
            if not done.all():
                label, conf = label.copy(), conf.copy()
                label[~done], conf[~done], _ = self._infer(idx[~done])
            return label, conf, Compute(len(idx), 0, time.perf_counter() - start)
        return self._infer(idx)

    def _infer(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, Compute]:
        start = time.perf_counter()
        if self.items.reinfer is not None:
            label, conf = self.items.reinfer(self.model_path, idx)
            return label, conf, Compute(len(idx), 0, time.perf_counter() - start)
        adapter = self.ctx.adapter
        name, bs = adapter.input_names[0], capped_batch(self.ctx.cfg.batch_size, self.items.item_bytes)
        label, conf = np.full(len(idx), -1, dtype=np.int64), np.full(len(idx), np.nan)
        for part, x in self.items.read(idx, bs):  # idx is sorted: its chunks are found by bisection
            at = np.searchsorted(idx, part)
            label[at], conf[at] = scores(self.session.run({name: x})[0])
        return label, conf, Compute(len(idx), 0, time.perf_counter() - start)


def scores(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and confidences (softmax in float64) of a batch of logits, as this process scores answers."""
    probs = softmax(logits.astype(np.float64))
    return probs.argmax(1), probs.max(1)


def mark(out: Outcome, idx: np.ndarray, method: str) -> None:
    """Add ``method`` to the '+'-joined methods behind each item's answer (once per distinct value: sets are large,
    the values few)."""
    idx = np.asarray(idx, dtype=np.int64)
    current = out.method[idx]
    for value in set(current):
        parts = value.split("+") if value else []
        out.method[idx[current == value]] = "+".join(parts if method in parts else [*parts, method])


def set_column(out: Outcome, prefix: str, idx: np.ndarray, labels: np.ndarray, conf: np.ndarray) -> None:
    """Write items ``idx`` of the ``<prefix>_label`` and ``<prefix>_confidence`` columns (created empty if new)."""
    n = len(out.label)
    lab = out.columns.setdefault(f"{prefix}_label", np.full(n, -1, dtype=np.int64))
    con = out.columns.setdefault(f"{prefix}_confidence", np.full(n, np.nan))
    lab[idx], con[idx] = labels, conf
