"""The optimize stage: build the variants, measure each on the user's own files, pick one, write optimize.json.

Pure core: no Prefect, no MLflow. The flow's wrapper (task.py) and ``helios optimize`` (cli.py) both call
``optimize_model``.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from helios.models.base import Decoded, InputError, ModelAdapter
from helios.samples import decode_files
from tasks.optimize.config import OptimizeConfig
from tasks.optimize.evaluate import measure, order_for_batching, quality, retime, run_outputs, workload
from tasks.optimize.quantize import rank_sensitive, weight_nodes
from tasks.optimize.result import OptimizeResult, VariantReport
from tasks.optimize.runtime import open_runner, ort_errors
from tasks.optimize.select import quality_problem, select_variant
from tasks.optimize.variants import Built, build_variant, plan_variants
from tasks.prepare.export import write_recipe
from tasks.session import ProviderFallback

log = logging.getLogger(__name__)
METHODS = {
    "latency": "batch 1, one item at a time spread over the sample, after 3 warm-up runs; p50/p95/p99 of wall time",
    "throughput": "items/s over the whole sample at each batch size (text batched by length); best of "
                  "optimize.rounds passes interleaved over the variants; best batch size kept",
    "peak_mem_mb": "growth of process RSS over the pre-session level while the session is built and runs "
                   "(sampled every 2 ms, heap trimmed first); host memory only",
    "quality": "against the fp32 variant on the same sample: top-1 agreement; embedders also mean/min cosine",
}


def optimize_model(cfg: OptimizeConfig, adapter: ModelAdapter, prepared, sample_paths: list[Path], out_dir: Path,
                   profile, recommendation, truth: dict[str, str] | None = None) -> OptimizeResult:
    """Build, measure and select variants of ``prepared.onnx_path``; write ``out_dir/optimize.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    context = {"hardware_class": profile.hardware_class, "providers": list(recommendation.providers),
               "intra_op_threads": recommendation.intra_op_threads, "int8_settings": recommendation.int8_settings,
               "budget": {"min_agreement": cfg.min_agreement, "min_cosine": cfg.min_cosine, "min_gain": cfg.min_gain},
               "task": adapter.task, "methods": METHODS, "parity": prepared.parity}
    if not cfg.enabled:
        only = VariantReport("fp32", Path(prepared.onnx_path), adapter.task, Path(prepared.onnx_path).stat().st_size,
                             None, None, None, None, None, None, agreement=1.0 if adapter.task == "classifier" else None,
                             cosine=1.0 if adapter.task == "embedder" else None, providers=tuple(recommendation.providers),
                             requested_providers=tuple(recommendation.providers), selected=True,
                             reason="optimize disabled")
        return write_result(OptimizeResult(only, [only], out_dir / "optimize.json", {}, context))
    names, skipped = plan_variants(cfg, adapter, profile, recommendation)
    items, truth_idx = load_eval_sample(adapter, sample_paths, max(cfg.eval_samples, cfg.calibration_samples), truth)
    calibration = [adapter.collate(items[i:i + 16]) for i in range(0, min(len(items), cfg.calibration_samples), 16)]
    order = order_for_batching(adapter, items[:cfg.eval_samples])
    evals = [items[i] for i in order]
    truth_eval = truth_idx[order] if truth_idx is not None else None
    context["sample"] = {"eval_items": len(evals), "calibration_items": min(len(items), cfg.calibration_samples)}
    work = workload(adapter, evals, cfg.batch_sizes, cfg.latency_runs)
    evaluated, reference, fused = [], None, None
    for name in names:
        ev = evaluate_variant(name, cfg, adapter, Path(prepared.onnx_path), fused, out_dir, recommendation,
                              calibration, work, truth_eval, reference)
        if name == "fp32":
            if ev.error:
                raise RuntimeError(f"the fp32 reference variant failed: {ev.error}")
            reference = ev.outputs
        if name == "fp32-fused" and not ev.error:
            fused = ev.variant.path
        evaluated.append(ev)
    for _ in range(cfg.rounds - 1):  # interleaved over variants: load bursts hit all of them alike
        for ev in evaluated:
            if ev.runner is not None:
                ev.throughput = retime(ev.runner, work, ev.throughput)
    reports = [ev.finish() for ev in evaluated]
    chosen = select_variant(reports, cfg.min_agreement, cfg.min_cosine, cfg.min_gain)
    selected = next(v for v in chosen if v.selected)
    log.info("optimize: selected %s (%s)", selected.name, selected.reason)
    return write_result(OptimizeResult(selected, chosen, out_dir / "optimize.json", skipped, context))


class _Evaluated:
    """A variant between its first measured pass and the end of the interleaved rounds."""

    def __init__(self, variant: VariantReport, outputs=None, runner=None):
        self.variant, self.outputs, self.runner = variant, outputs, runner
        self.error = variant.error
        self.throughput = dict(variant.throughput_by_batch)

    def finish(self) -> VariantReport:
        if not self.throughput:
            return self.variant
        best = max(self.throughput, key=self.throughput.__getitem__)
        return replace(self.variant, throughput_by_batch=dict(sorted(self.throughput.items())),
                       throughput_per_s=self.throughput[best], best_batch=best)


def evaluate_variant(name, cfg, adapter, source, fused, out_dir, rec, calibration, work, truth_eval,
                     reference) -> _Evaluated:
    """Build and measure one variant; a build or run failure becomes a row with ``error`` (fallback still raises)."""
    try:
        built = build_variant(name, adapter, source, fused, out_dir, rec, calibration, cfg)
        if name == "int8-dynamic":
            built = retry_sensitive(built, cfg, adapter, source, fused, out_dir, rec, calibration, work, reference)
        runner, measured = measure(lambda: open_runner(built.path, rec.providers, rec.intra_op_threads,
                                                       rec.inter_op_threads, cfg.on_provider_fallback,
                                                       built.optimized_offline), work)
    except ProviderFallback:
        raise
    except (RuntimeError, ValueError, KeyError, OSError, InputError, *ort_errors()) as exc:  # record, keep going
        log.warning("optimize: variant %s failed: %s", name, exc)
        path = out_dir / f"{name}.onnx"
        return _Evaluated(VariantReport(name, path, adapter.task, path.stat().st_size if path.exists() else 0,
                                        None, None, None, None, None, None, error=f"{type(exc).__name__}: {exc}"[:500]))
    q = quality(adapter.task, measured.outputs, reference if reference is not None else measured.outputs, truth_eval)
    handle = runner.handle
    variant = VariantReport(
        name, built.path, adapter.task, built.path.stat().st_size, *measured.latency_ms,
        measured.throughput_by_batch[measured.best_batch], measured.best_batch, measured.peak_mem_mb,
        agreement=q["agreement"], cosine=q.get("cosine"), min_cosine=q.get("min_cosine"), accuracy=q.get("accuracy"),
        providers=handle.actual, requested_providers=handle.requested, fell_back=handle.fell_back,
        throughput_by_batch=measured.throughput_by_batch)
    return _Evaluated(variant, measured.outputs, runner)


def retry_sensitive(built: Built, cfg, adapter, source, fused, out_dir, rec, calibration, work, reference) -> Built:
    """int8-dynamic missing the budget: keep the MatMuls with the worst measured quantization error in fp32."""
    exclude = list(built.recipe["quantization"]["nodes_excluded"])
    ranking: list[str] | None = None
    attempts = []
    for attempt in range(cfg.int8_retries + 1):
        runner = open_runner(built.path, ("CPUExecutionProvider",), rec.intra_op_threads)
        q = quality(adapter.task, run_outputs(runner, work), reference, None)
        probe = VariantReport(built.name, built.path, adapter.task, 0, None, None, None, 1.0, 1, None,
                              agreement=q["agreement"], cosine=q.get("cosine"))
        attempts.append({"excluded": len(exclude), **{k: round(v, 5) for k, v in q.items()}})
        if quality_problem(probe, cfg.min_agreement, cfg.min_cosine) is None or attempt == cfg.int8_retries:
            break
        base = fused or source
        if ranking is None:
            candidates = [n for n in built_candidates(base) if n not in exclude]
            ranking = rank_sensitive(base, calibration[:4], rec.int8_settings, candidates)
        step = max(1, math.ceil(len(ranking) / 4))
        exclude += ranking[:step]
        ranking = ranking[step:]
        built = build_variant(built.name, adapter, source, fused, out_dir, rec, calibration, cfg, exclude)
    built.recipe["quantization"]["attempts"] = attempts
    write_recipe(built.path, built.recipe)
    return built


def built_candidates(path: Path) -> list[str]:
    import onnx

    return [n.name for n in weight_nodes(onnx.load(str(path), load_external_data=False)) if n.op_type == "MatMul"]


def load_eval_sample(adapter: ModelAdapter, paths: list[Path], limit: int,
                     truth: dict[str, str] | None) -> tuple[list[Decoded], np.ndarray | None]:
    """Decode up to ``limit`` usable files; with ``truth`` also their label indices (-1 where unknown)."""
    index = {label: i for i, label in enumerate(adapter.labels)}
    decoded = list(decode_files(adapter, paths, limit))  # unusable files are reported by the infer stage
    items = [item for _, item in decoded]
    labels = [index.get(truth_label(truth, Path(paths[i])), -1) if truth else -1 for i, _ in decoded]
    if not items:
        raise InputError(f"none of the {len(paths)} sample files could be decoded for {adapter.name}: "
                         "the optimize stage needs real inputs to calibrate and compare variants")
    return items, (np.array(labels) if truth else None)


def truth_label(truth: dict[str, str], path: Path) -> str | None:
    """Labels are keyed by path relative to the input root; match the longest trailing part of ``path``."""
    parts = path.parts
    for i in range(len(parts)):
        key = "/".join(parts[i:])
        if key in truth:
            return truth[key]
    return None


def write_result(result: OptimizeResult) -> OptimizeResult:
    result.table_path.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return result
