"""Pick the variant: the fastest whose quality loss is within budget, with a reason written for every variant.

"Fastest" is throughput at each variant's best batch size (the pipeline runs batches). A lossy variant (int8,
fp16) has to beat the best lossless one (fp32, fused fp32) by ``min_gain``; a smaller gain is within measurement
noise on a shared machine and not worth any quality loss.
"""
from __future__ import annotations

from tasks.optimize.result import VariantReport

LOSSLESS = ("fp32", "fp32-fused")
REFERENCE = "fp32"


class NoUsableVariant(RuntimeError):
    """Every variant failed to build or run, the fp32 reference included."""


def quality_text(v: VariantReport) -> str:
    if v.task == "embedder":
        return f"mean cosine {v.cosine:.4f}" if v.cosine is not None else "cosine not measured"
    return f"top-1 agreement {v.agreement:.2%}" if v.agreement is not None else "agreement not measured"


def quality_problem(v: VariantReport, min_agreement: float, min_cosine: float) -> str | None:
    """Why ``v`` misses the quality budget, or None when it is within it."""
    if v.error:
        return f"failed: {v.error}"
    if v.task == "embedder":
        if v.cosine is None or v.cosine < min_cosine:
            return f"quality below budget: {quality_text(v)} < optimize.min_cosine={min_cosine}" + _untimed(v)
    elif v.agreement is None or v.agreement < min_agreement:
        return f"quality below budget: {quality_text(v)} < optimize.min_agreement={min_agreement:.2%}" + _untimed(v)
    if v.throughput_per_s is None:
        return "not measured"
    return None


def _untimed(v: VariantReport) -> str:
    return " (not timed: it cannot be chosen)" if v.throughput_per_s is None else ""


def select_variant(variants: list[VariantReport], min_agreement: float, min_cosine: float,
                   min_gain: float) -> list[VariantReport]:
    """Return ``variants`` (same order) with exactly one ``selected`` and a ``reason`` on each."""
    problems = {v.name: quality_problem(v, min_agreement, min_cosine) for v in variants}
    eligible = sorted((v for v in variants if problems[v.name] is None), key=lambda v: -v.throughput_per_s)
    if not eligible:
        raise NoUsableVariant("no variant could be measured: " + "; ".join(f"{k}: {p}" for k, p in problems.items()))
    fastest = eligible[0]
    lossless = [v for v in eligible if v.name in LOSSLESS]
    winner, why = fastest, None
    if fastest.name not in LOSSLESS and lossless and fastest.throughput_per_s < lossless[0].throughput_per_s * (1 + min_gain):
        winner = lossless[0]
        why = (f"lossless, and the fastest lossy variant {fastest.name} is only "
               f"{fastest.throughput_per_s / winner.throughput_per_s - 1:+.1%} faster (optimize.min_gain={min_gain:.0%})")
    reference = next((v for v in variants if v.name == REFERENCE and v.throughput_per_s), None)
    out = []
    for v in variants:
        if v is winner:
            ratio = f", {v.throughput_per_s / reference.throughput_per_s:.2f}x fp32" if reference else ""
            reason = why or (f"fastest within the quality budget: {v.throughput_per_s:.1f}/s at batch {v.best_batch}"
                             f"{ratio}; {quality_text(v)}")
            out.append(v.with_verdict(True, reason + _fallback_note(v)))
        elif problems[v.name]:
            out.append(v.with_verdict(False, problems[v.name] + _fallback_note(v)))
        elif v is fastest:
            out.append(v.with_verdict(False, f"gain too small to spend quality on: {v.throughput_per_s:.1f}/s vs "
                                             f"{winner.throughput_per_s:.1f}/s for lossless {winner.name} "
                                             f"(needs +{min_gain:.0%}); {quality_text(v)}" + _fallback_note(v)))
        else:
            out.append(v.with_verdict(False, f"slower: {v.throughput_per_s:.1f}/s vs {winner.throughput_per_s:.1f}/s "
                                             f"for {winner.name} ({v.throughput_per_s / winner.throughput_per_s:.2f}x); "
                                             f"{quality_text(v)}" + _fallback_note(v)))
    return out


def _fallback_note(v: VariantReport) -> str:
    if not v.fell_back:
        return ""
    return f" [requested {', '.join(v.requested_providers)} but ran on {', '.join(v.providers)}]"
