"""Prose-like topic texts for the text demo: seeded, offline, with real-looking lengths (median ≈ 70 words, long tail)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Subjects, verbs, objects and details per topic, combined at random into sentences (data, not code).
TOPICS: dict[str, dict[str, list[str]]] = json.loads(
    (Path(__file__).with_name("text_topics.json")).read_text(encoding="utf-8"))


def sentence(topic: str, rng: np.random.Generator) -> str:
    parts = TOPICS[topic]
    pick = lambda key: parts[key][rng.integers(len(parts[key]))]  # noqa: E731 - tiny local helper
    return f"{pick('subjects')} {pick('verbs')} {pick('objects')} {pick('details')}."


def word_count(rng: np.random.Generator) -> int:
    """Lognormal with median 70 words and a long tail, capped at 3,000."""
    return int(min(3000, max(8, rng.lognormal(np.log(70), 0.8))))


def write_text(topic: str, rng: np.random.Generator) -> str:
    target, words, out = word_count(rng), 0, []
    while words < target:
        s = sentence(topic, rng)
        out.append(s)
        words += len(s.split())
    return " ".join(out)
