"""What the optimize stage returns: one VariantReport per built variant, and the OptimizeResult around them."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class VariantReport:
    """One variant's file and figures. ``agreement`` is filled for classifiers, ``cosine`` for embedders."""

    name: str
    path: Path
    task: str  # "classifier" | "embedder"
    size_bytes: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    throughput_per_s: float | None
    best_batch: int | None
    peak_mem_mb: float | None
    agreement: float | None = None  # top-1 agreement with the fp32 reference
    cosine: float | None = None  # mean cosine of embeddings to the fp32 reference
    min_cosine: float | None = None
    accuracy: float | None = None  # when labels were given
    providers: tuple[str, ...] = ()
    requested_providers: tuple[str, ...] = ()
    fell_back: bool = False
    throughput_by_batch: dict[int, float] = field(default_factory=dict)
    selected: bool = False
    reason: str = ""
    error: str | None = None  # building or running failed: the variant did not compete
    quality_items: int | None = None  # items its quality was measured on (fp32-fused: the timing subset)

    def with_verdict(self, selected: bool, reason: str) -> VariantReport:
        return replace(self, selected=selected, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        quality = {"agreement": self.agreement} if self.task == "classifier" else {
            "cosine": self.cosine, "min_cosine": self.min_cosine, "label_agreement": self.agreement}
        return {
            "name": self.name, "path": str(self.path), "size_bytes": self.size_bytes,
            "latency_p50_ms": self.latency_p50_ms, "latency_p95_ms": self.latency_p95_ms,
            "latency_p99_ms": self.latency_p99_ms, "throughput_per_s": self.throughput_per_s,
            "best_batch": self.best_batch, "peak_mem_mb": self.peak_mem_mb, **quality, "accuracy": self.accuracy,
            "selected": self.selected, "reason": self.reason, "providers": list(self.providers),
            "requested_providers": list(self.requested_providers), "fell_back": self.fell_back,
            "throughput_by_batch": {str(k): v for k, v in self.throughput_by_batch.items()}, "error": self.error,
            "quality_items": self.quality_items,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantReport:
        """Rebuild from ``to_dict()`` (a GPU worker's result read back by the pipeline)."""
        task = "embedder" if "label_agreement" in data else "classifier"  # the quality keys to_dict wrote
        agreement = data.get("label_agreement", data.get("agreement"))
        return cls(data["name"], Path(data["path"]), task, data["size_bytes"], data["latency_p50_ms"],
                   data["latency_p95_ms"], data["latency_p99_ms"], data["throughput_per_s"], data["best_batch"],
                   data["peak_mem_mb"], agreement=agreement, cosine=data.get("cosine"),
                   min_cosine=data.get("min_cosine"), accuracy=data.get("accuracy"),
                   providers=tuple(data["providers"]), requested_providers=tuple(data["requested_providers"]),
                   fell_back=data["fell_back"], selected=data["selected"], reason=data["reason"], error=data["error"],
                   throughput_by_batch={int(k): v for k, v in data["throughput_by_batch"].items()},
                   quality_items=data.get("quality_items"))


@dataclass(frozen=True)
class OptimizeResult:
    """The selected variant, every variant measured, and where ``optimize.json`` was written."""

    selected: VariantReport
    variants: list[VariantReport]
    table_path: Path
    skipped: dict[str, str] = field(default_factory=dict)  # variant -> why it was not built
    context: dict[str, Any] = field(default_factory=dict)  # hardware class, settings, methods

    def to_dict(self) -> dict[str, Any]:
        return {"selected": self.selected.name, "reason": self.selected.reason,
                "variants": [v.to_dict() for v in self.variants], "skipped": dict(self.skipped), **self.context}

    @classmethod
    def from_dict(cls, data: dict[str, Any], table_path: Path) -> OptimizeResult:
        """Rebuild from ``to_dict()``: what ``optimize.json`` at ``table_path`` holds."""
        own = {"selected", "reason", "variants", "skipped"}
        variants = [VariantReport.from_dict(v) for v in data["variants"]]
        selected = next(v for v in variants if v.selected)
        return cls(selected, variants, Path(table_path), dict(data.get("skipped") or {}),
                   {k: v for k, v in data.items() if k not in own})
