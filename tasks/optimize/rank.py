"""Rank (variant, batch size) arms by throughput within a time budget: successive halving.

Every arm has one figure from its first pass. Each further round times every surviving arm once more (keeping its
best figure, so a burst of load from other processes does not decide the winner) and then drops the slower half.
It stops as soon as the ranking is clear — one variant left, or the leading variant ahead of every other by
``CLEAR_MARGIN`` — when ``max_rounds`` rounds are done, or when the deadline passes. Arms that were dropped keep
the figures they had; the notes say what happened, for optimize.json.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

# A leader this far ahead of every other variant stays ahead under the noise of a shared 2-core machine (repeated
# passes there moved a variant's figure by up to ~15 %), so timing more rounds could not change the choice.
CLEAR_MARGIN = 0.25


@dataclass
class Arm:
    """One variant at one batch size: ``time_pass()`` runs one timed pass and returns items/s."""

    variant: str
    batch: int
    lossless: bool
    time_pass: Callable[[], float]
    best: float
    passes: int = 1
    dropped: str | None = field(default=None)


def leaders(arms: list[Arm]) -> list[Arm]:
    """The best arm of each variant, fastest first."""
    best: dict[str, Arm] = {}
    for arm in arms:
        if arm.variant not in best or arm.best > best[arm.variant].best:
            best[arm.variant] = arm
    return sorted(best.values(), key=lambda a: -a.best)


def ranking_clear(arms: list[Arm], margin: float = CLEAR_MARGIN) -> bool:
    """One variant left, or the leading variant faster than every other by ``margin``."""
    top = leaders(arms)
    return len(top) < 2 or top[0].best >= top[1].best * (1 + margin)


def halve(arms: list[Arm]) -> list[Arm]:
    """The faster half of ``arms`` (rounded up), plus the best lossless arm: a lossy winner has to beat it."""
    ordered = sorted(arms, key=lambda a: -a.best)
    keep = ordered[:math.ceil(len(ordered) / 2)]
    lossless = [a for a in ordered if a.lossless]
    if lossless and not any(a.lossless for a in keep):
        keep.append(lossless[0])
    return keep


def rank_arms(arms: list[Arm], deadline: float, max_rounds: int, margin: float = CLEAR_MARGIN,
              clock: Callable[[], float] = time.perf_counter) -> dict:
    """Run the rounds in place on ``arms`` (their ``best``/``passes``/``dropped`` change); returns the notes."""
    alive, rounds, stop = list(arms), 1, "max rounds reached"
    while True:
        if ranking_clear(alive, margin):
            stop = "ranking clear" if len(leaders(alive)) > 1 else "one variant left"
            break
        if rounds >= max_rounds:
            break
        if clock() >= deadline:
            stop = "time budget spent"
            break
        for arm in alive:
            if clock() >= deadline:
                break
            arm.best = max(arm.best, arm.time_pass())
            arm.passes += 1
        rounds += 1
        kept = halve(alive)
        for arm in alive:
            if arm not in kept:
                arm.dropped = f"dropped after round {rounds}: {arm.best:.1f}/s"
        alive = kept
    return {"rounds": rounds, "stopped": stop, "arms_timed": len(arms),
            "passes": sum(a.passes for a in arms), "finalists": [f"{a.variant} b{a.batch}" for a in alive]}
