"""What the refinement rounds share: the per-item outcome, the ledger behind the report's figures, the record of one
set's run and the helpers that fill the outcome's columns. No torch here."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from helios.models.base import softmax
from tasks.refine.context import RefineContext


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
class Run:
    """One set's refinement run: its inputs, the session answers come from and what TTA already augmented."""

    ctx: RefineContext
    x: np.ndarray
    session: object = None  # the ONNX session answers come from (source, then adapted)
    module: object = None  # the torch module to adapt (None: no TTT)
    rng: np.random.Generator | None = None
    model_version: int = 0  # bumped whenever the session's model changes
    tta_done: dict = field(default_factory=dict)  # item -> model_version it was augmented with

    def infer(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, Compute]:
        """Labels and confidences of items ``idx`` from the current session, and the compute it took."""
        start = time.perf_counter()
        adapter = self.ctx.adapter
        name, bs = adapter.input_names[0], self.ctx.cfg.batch_size
        logits = [self.session.run({name: self.x[idx[i:i + bs]]})[0] for i in range(0, len(idx), bs)]
        probs = softmax(np.concatenate(logits).astype(np.float64)) if logits else np.zeros((0, len(adapter.labels)))
        return probs.argmax(1), probs.max(1), Compute(len(idx), 0, time.perf_counter() - start)


def mark(out: Outcome, idx: np.ndarray, method: str) -> None:
    """Add ``method`` to the '+'-joined methods behind each item's answer."""
    for i in idx:
        parts = out.method[i].split("+") if out.method[i] else []
        out.method[i] = "+".join(parts if method in parts else [*parts, method])


def set_column(out: Outcome, prefix: str, idx: np.ndarray, labels: np.ndarray, conf: np.ndarray) -> None:
    """Write items ``idx`` of the ``<prefix>_label`` and ``<prefix>_confidence`` columns (created empty if new)."""
    n = len(out.label)
    lab = out.columns.setdefault(f"{prefix}_label", np.full(n, -1, dtype=np.int64))
    con = out.columns.setdefault(f"{prefix}_confidence", np.full(n, np.nan))
    lab[idx], con[idx] = labels, conf
