"""Prose-like topic texts for the text demo: seeded, offline, with real-looking lengths (median ≈ 70 words, long tail)."""
from __future__ import annotations

import numpy as np

TOPICS: dict[str, dict[str, list[str]]] = {
    "world": {
        "subjects": ["The prime minister", "Foreign ministers", "The United Nations", "Opposition leaders", "The parliament",
                     "Diplomats from both countries", "The new government", "Election observers", "The president"],
        "verbs": ["announced", "rejected", "negotiated", "condemned", "signed", "debated", "postponed", "called for"],
        "objects": ["a ceasefire agreement", "new sanctions", "the peace talks", "an early election", "the border treaty",
                    "a humanitarian corridor", "the constitutional reform", "a joint statement on refugees"],
        "details": ["after weeks of tension in the region", "during a summit in the capital", "amid protests in the streets",
                    "as voters head to the polls", "following a disputed vote", "under pressure from neighbouring states"],
    },
    "sports": {
        "subjects": ["The home team", "The veteran striker", "The coach", "The defending champions", "The young goalkeeper",
                     "Both clubs", "The captain", "The league leaders", "The tennis star"],
        "verbs": ["won", "lost", "clinched", "scored in", "dominated", "drew", "celebrated", "fought back in"],
        "objects": ["the final match of the season", "a tense overtime game", "the championship title", "the derby",
                    "the opening round of the tournament", "a penalty shootout", "the semi-final", "the cup qualifier"],
        "details": ["in front of a sold-out stadium", "after a late goal", "with two players injured", "despite heavy rain",
                    "to stay top of the table", "in their best performance this year"],
    },
    "business": {
        "subjects": ["Shares of the retailer", "The central bank", "The tech giant", "Investors", "The carmaker",
                     "Oil prices", "The airline", "Quarterly earnings", "The startup"],
        "verbs": ["rose", "fell", "reported", "cut", "raised", "beat", "missed", "forecast"],
        "objects": ["interest rates", "its revenue guidance", "analyst estimates", "profits for the third quarter",
                    "a merger with its rival", "thousands of jobs", "the dividend", "record sales"],
        "details": ["as inflation slowed", "on the stock exchange", "amid weak consumer demand", "after the market closed",
                    "despite supply chain problems", "according to a regulatory filing"],
    },
    "science": {
        "subjects": ["Researchers", "The space agency", "A team of physicists", "The new telescope", "Software engineers",
                     "Astronomers", "Climate scientists", "The biotech lab", "A university study"],
        "verbs": ["discovered", "launched", "published", "developed", "measured", "observed", "tested", "released"],
        "objects": ["a distant exoplanet", "a faster quantum computer chip", "an open source compiler", "a new vaccine candidate",
                    "gravitational waves", "a satellite to study the climate", "an algorithm for protein folding", "the genome"],
        "details": ["in a paper in a scientific journal", "using machine learning models", "after years of experiments",
                    "with data from the orbiting observatory", "in a laboratory in Europe", "to the surprise of many experts"],
    },
}


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
