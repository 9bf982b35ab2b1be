"""Variants known to miss the quality budget: not rebuilt for the same model family, hardware class and recipe.

A lossy variant that missed the budget (int8-static QDQ on a transformer gave a mean cosine of 0.92 on minilm) does
so again on the next run with the same model, the same hardware class, the same quantization settings and the same
ONNX Runtime. The core takes such records as a list and skips those variants, saying why; it returns the new ones
from its result. Where the records live is the caller's business (the flows keep a small JSON file in the work
directory, see ``flows.optimize``). A record stores the measured quality, not a verdict: a looser budget (a lower
``optimize.min_cosine``) lets the variant compete again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from tasks.optimize.result import OptimizeResult
from tasks.optimize.select import LOSSLESS


@dataclass(frozen=True)
class KnownFailure:
    """One variant's measured quality below budget, and what it was built from."""

    model: str
    hardware_class: str
    variant: str
    recipe_key: str  # hash of what decides the variant's quality (settings, ORT version)
    metric: str  # "cosine" or "agreement"
    value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KnownFailure:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def recipe_key(variant: str, int8_settings: dict, cfg, ort_version: str) -> str:
    """What decides a lossy variant's quality besides the model: its quantization settings and the runtime."""
    settings = {"variant": variant, "int8": int8_settings, "ort": ort_version}
    if variant == "int8-static":
        settings.update(calibration=cfg.calibration, percentile=cfg.percentile)
    if variant == "int8-dynamic":
        settings.update(retries=cfg.int8_retries)
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def fails_budget(record: KnownFailure, min_agreement: float, min_cosine: float) -> bool:
    return record.value < (min_cosine if record.metric == "cosine" else min_agreement)


def skip_known(names: list[str], known: list[KnownFailure], model: str, hardware_class: str, keys: dict[str, str],
               min_agreement: float, min_cosine: float) -> tuple[list[str], dict[str, str]]:
    """(variants still to build, {variant: why skipped}) given the records for this model and hardware class."""
    build, skipped = [], {}
    for name in names:
        match = next((r for r in known if (r.model, r.hardware_class, r.variant, r.recipe_key)
                      == (model, hardware_class, name, keys.get(name)) and fails_budget(r, min_agreement, min_cosine)),
                     None)
        if match is None or name in LOSSLESS:
            build.append(name)
            continue
        budget = f"optimize.min_cosine={min_cosine}" if match.metric == "cosine" else f"optimize.min_agreement={min_agreement}"
        skipped[name] = (f"known to miss the quality budget for {model} on {hardware_class} with these settings: "
                         f"{match.metric} {match.value:.4f} < {budget} on an earlier run; not rebuilt")
    return build, skipped


def failures_of(result: OptimizeResult, model: str, hardware_class: str, keys: dict[str, str],
                min_agreement: float, min_cosine: float) -> list[KnownFailure]:
    """The lossy variants of ``result`` that were built and measured but missed the quality budget."""
    out = []
    for v in result.variants:
        metric, value = ("cosine", v.cosine) if v.task == "embedder" else ("agreement", v.agreement)
        if v.name in LOSSLESS or v.error or value is None or v.name not in keys:
            continue
        record = KnownFailure(model, hardware_class, v.name, keys[v.name], metric, round(float(value), 5))
        if fails_budget(record, min_agreement, min_cosine):
            out.append(record)
    return out


def merge(known: list[KnownFailure], new: list[KnownFailure]) -> list[KnownFailure]:
    """``known`` with ``new`` added; a newer record for the same model, class, variant and recipe replaces the old."""
    ident = lambda r: (r.model, r.hardware_class, r.variant, r.recipe_key)  # noqa: E731 - tiny local helper
    fresh = {ident(r) for r in new}
    return [r for r in known if ident(r) not in fresh] + list(new)
