"""The optimize stage: build the variants, measure each on the user's own files, pick one, write optimize.json.

Pure core: no Prefect, no MLflow. The flow's wrapper (task.py) and ``helios optimize`` (flows/optimize.py) both
call ``optimize_model``.

What it costs is kept in proportion to the run: the sample is never larger than the run (``run_items``); a run no
larger than ``optimize.eval_samples`` takes the fp32 export by recipe, untimed (timing the variants would read
as many files as the run infers); a single candidate is not ranked; a variant known to miss the quality budget
for this model and hardware class (``known``) is not rebuilt; and throughput is ranked by successive halving
within ``optimize.time_budget_s`` (``tasks.optimize.rank``).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from helios.models.base import Decoded, InputError, ModelAdapter
from helios.samples import decode_files, order_for_batching
from tasks.optimize.config import OptimizeConfig
from tasks.optimize.evaluate import measure, quality, run_batch_sizes, run_outputs, time_pass, workload
from tasks.optimize.known import KnownFailure, recipe_key, skip_known
from tasks.optimize.rank import Arm, rank_arms
from tasks.optimize.result import OptimizeResult, VariantReport
from tasks.optimize.retry import retry_sensitive
from tasks.optimize.runtime import open_runner, ort_errors
from tasks.optimize.select import LOSSLESS, select_variant
from tasks.optimize.variants import build_variant, plan_variants
from tasks.session import ProviderFallback

log = logging.getLogger(__name__)
METHODS = {
    "latency": "batch 1, one item at a time spread over the sample, after 3 warm-up runs; p50/p95/p99 of wall time",
    "throughput": "items/s over a timing subset spread evenly over the sample, at each batch size (text batched by "
                  "length); best of the passes each (variant, batch) got: successive halving within "
                  "optimize.time_budget_s, stopped once the ranking is clear; best batch size kept",
    "peak_mem_mb": "growth of process RSS over the pre-session level while the session is built and runs "
                   "(sampled every 2 ms, heap trimmed first); host memory only",
    "quality": "against the fp32 variant on the same sample: top-1 agreement; embedders also mean/min cosine",
}
TIMING_ITEMS = 64  # items per throughput pass: enough to rank, a quarter of the default quality sample


def optimize_model(cfg: OptimizeConfig, adapter: ModelAdapter, prepared, sample_paths: list[Path], out_dir: Path,
                   profile, recommendation, truth: dict[str, str] | None = None, run_items: int | None = None,
                   known: list[KnownFailure] | tuple = ()) -> OptimizeResult:
    """Build, measure and select variants of ``prepared.onnx_path``; write ``out_dir/optimize.json``.

    ``run_items``: how many items the run will infer (None: unknown, as for ``helios optimize``); ``known``: variants
    known to miss the quality budget (see ``tasks.optimize.known``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    context = {"hardware_class": profile.hardware_class, "providers": list(recommendation.providers),
               "intra_op_threads": recommendation.intra_op_threads, "int8_settings": recommendation.int8_settings,
               "budget": {"min_agreement": cfg.min_agreement, "min_cosine": cfg.min_cosine, "min_gain": cfg.min_gain},
               "task": adapter.task, "methods": METHODS, "parity": prepared.parity}
    source = Path(prepared.onnx_path)
    if run_items == 0:  # as before tiny runs were picked by recipe: a model is never chosen (and registered) on nothing
        raise InputError("the scan found no files to infer, so there is nothing to optimize on: point --input at a "
                         "folder or table that holds files")
    if not cfg.enabled:
        only = untimed("fp32", source, adapter, recommendation, "optimize disabled")
        return write_result(OptimizeResult(only, [only], out_dir / "optimize.json", {}, context))
    names, skipped = plan_variants(cfg, adapter, profile, recommendation)
    keys = variant_keys(names, recommendation, cfg)
    names, known_skips = skip_known(names, list(known), adapter.name, profile.hardware_class, keys,
                                    cfg.min_agreement, cfg.min_cosine)
    skipped.update(known_skips)
    context["recipe_keys"] = keys
    if run_items is not None and run_items <= cfg.eval_samples and len(names) > 1:
        for name in names[1:]:
            skipped[name] = (f"tiny run: {run_items} items, no more than optimize.eval_samples={cfg.eval_samples}, "
                             "so timing variants would cost more than they could save; fp32 picked by recipe")
        names = ["fp32"]
    if names == ["fp32"]:
        built = build_variant("fp32", adapter, source, None, out_dir, recommendation, [], cfg)
        why = ("the only candidate, picked by recipe: nothing to rank, not timed"
               if not any(k.startswith("tiny run") for k in skipped.values()) else
               f"tiny run ({run_items} items): the offline-optimized fp32 export, picked by recipe, not timed")
        only = untimed("fp32", built.path, adapter, recommendation, why, cfg.on_provider_fallback, True)
        if truth and run_items is None:  # `helios optimize --labels`: the accuracy, from one untimed pass
            only = replace(only, accuracy=labelled_accuracy(cfg, adapter, built.path, sample_paths, truth,
                                                            recommendation))
        return write_result(OptimizeResult(only, [only], out_dir / "optimize.json", skipped, context))
    return write_result(measure_and_select(cfg, adapter, source, names, skipped, out_dir, recommendation, truth,
                                           sample_paths, run_items, context))


def measure_and_select(cfg, adapter, source, names, skipped, out_dir, rec, truth, sample_paths, run_items,
                       context) -> OptimizeResult:
    """Build and measure ``names`` in order (fp32 first: the quality reference), rank the survivors, select."""
    n_eval = cfg.eval_samples if run_items is None else max(1, min(cfg.eval_samples, run_items))
    if adapter.task == "embedder" and not truth:  # judged by mean cosine alone: fewer files decide it
        n_eval = min(n_eval, cfg.embedder_eval_samples)
    n_calib = cfg.calibration_samples if run_items is None else max(1, min(cfg.calibration_samples, run_items))
    items, truth_idx = load_eval_sample(adapter, sample_paths, max(n_eval, n_calib), truth)
    calibration = [adapter.collate(items[i:i + 16]) for i in range(0, min(len(items), n_calib), 16)]
    order = order_for_batching(adapter, items[:n_eval])
    evals = [items[i] for i in order]
    truth_eval = truth_idx[order] if truth_idx is not None else None
    sizes, not_timed = run_batch_sizes(adapter, evals, cfg.batch_sizes, rec.providers)
    work = workload(adapter, evals, sizes, cfg.latency_runs, TIMING_ITEMS)
    context["sample"] = {"eval_items": len(evals), "calibration_items": min(len(items), n_calib),
                         "timing_items": work.timed_items, "run_items": run_items}
    if not_timed:
        context["sample"]["batch_sizes_not_timed"] = not_timed
    start = time.perf_counter()
    deadline = start + cfg.time_budget_s
    evaluated, reference, fused, arms = [], None, None, []
    for name in names:
        ev = evaluate_variant(name, cfg, adapter, source, fused, out_dir, rec, calibration, work, truth_eval,
                              reference)
        if name == "fp32":
            if ev.error:
                raise RuntimeError(f"the fp32 reference variant failed: {ev.error}")
            reference = ev.outputs
        if name == "fp32-fused" and not ev.error:
            fused = ev.variant.path
        evaluated.append(ev)
        if not ev.error and within_budget(ev.variant, cfg):
            arms += [Arm(name, b, name in LOSSLESS, lambda r=ev.runner, b=b: time_pass(r, work, b), rate)
                     for b, rate in ev.variant.throughput_by_batch.items()]
    ranking = rank_arms(arms, deadline, cfg.rounds) if arms else {"rounds": 0, "stopped": "nothing to rank"}
    context["ranking"] = {**ranking, "time_budget_s": cfg.time_budget_s,
                          "build_and_measure_s": round(time.perf_counter() - start, 2),
                          "dropped": {f"{a.variant} b{a.batch}": a.dropped for a in arms if a.dropped}}
    reports = [finish(ev.variant, [a for a in arms if a.variant == ev.variant.name]) for ev in evaluated]
    chosen = select_variant(reports, cfg.min_agreement, cfg.min_cosine, cfg.min_gain)
    selected = next(v for v in chosen if v.selected)
    log.info("optimize: selected %s (%s)", selected.name, selected.reason)
    return OptimizeResult(selected, chosen, out_dir / "optimize.json", skipped, context)


def within_budget(v: VariantReport, cfg: OptimizeConfig) -> bool:
    """Measured, and quality within budget (a variant that misses it cannot be chosen, so it is not timed)."""
    return v.throughput_per_s is not None and quality_ok(v.task, {"agreement": v.agreement, "cosine": v.cosine}, cfg)


def quality_ok(task: str, q: dict, cfg: OptimizeConfig) -> bool:
    if task == "embedder":
        return q.get("cosine") is not None and q["cosine"] >= cfg.min_cosine
    return q.get("agreement") is not None and q["agreement"] >= cfg.min_agreement


def finish(v: VariantReport, arms: list[Arm]) -> VariantReport:
    """The variant with its best figure per batch size after the ranking."""
    if not arms:
        return v
    rates = {**v.throughput_by_batch, **{a.batch: a.best for a in arms}}
    best = max(rates, key=rates.__getitem__)
    return replace(v, throughput_by_batch=dict(sorted(rates.items())), throughput_per_s=round(rates[best], 2),
                   best_batch=best)


class _Evaluated:
    """A variant after its first measured pass: its report, its outputs (quality) and its open runner."""

    def __init__(self, variant: VariantReport, outputs=None, runner=None):
        self.variant, self.outputs, self.runner = variant, outputs, runner
        self.error = variant.error


def evaluate_variant(name, cfg, adapter, source, fused, out_dir, rec, calibration, work, truth_eval,
                     reference) -> _Evaluated:
    """Build and measure one variant; a build or run failure becomes a row with ``error`` (fallback still raises).

    A lossless variant other than the reference (fp32-fused: the same function, regrouped) is checked against the
    reference on the timing subset only; if every item there agrees it takes the reference's accuracy, otherwise it
    is measured on the whole sample like a lossy one. int8-dynamic outside the quality budget is rebuilt with its
    most sensitive MatMuls in fp32 (``retry_sensitive``) and measured again."""
    subset = reference is not None and name in LOSSLESS
    try:
        built = build_variant(name, adapter, source, fused, out_dir, rec, calibration, cfg)
        runner, measured, q = measure_built(built, cfg, adapter, rec, work, truth_eval, reference, subset)
        if subset and q["agreement"] < 1.0:  # not as lossless as it should be: judge it on the whole sample
            runner, measured, q = measure_built(built, cfg, adapter, rec, work, truth_eval, reference, False)
        if name == "int8-dynamic" and reference is not None and not quality_ok(adapter.task, q, cfg):
            retried = retry_sensitive(built, cfg, adapter, source, fused, out_dir, rec, calibration, work, reference,
                                      q)
            if retried is not built:  # rebuilt with MatMuls kept in fp32
                built = retried
                runner, measured, q = measure_built(built, cfg, adapter, rec, work, truth_eval, reference, False)
    except ProviderFallback:
        raise
    except (RuntimeError, ValueError, KeyError, OSError, InputError, *ort_errors()) as exc:  # record, keep going
        log.warning("optimize: variant %s failed: %s", name, exc)
        path = out_dir / f"{name}.onnx"
        return _Evaluated(VariantReport(name, path, adapter.task, path.stat().st_size if path.exists() else 0,
                                        None, None, None, None, None, None, error=f"{type(exc).__name__}: {exc}"[:500]))
    handle = runner.handle
    variant = VariantReport(
        name, built.path, adapter.task, built.path.stat().st_size, *measured.latency_ms,
        measured.throughput_by_batch.get(measured.best_batch), measured.best_batch, measured.peak_mem_mb,
        agreement=q["agreement"], cosine=q.get("cosine"), min_cosine=q.get("min_cosine"), accuracy=q.get("accuracy"),
        providers=handle.actual, requested_providers=handle.requested, fell_back=handle.fell_back,
        throughput_by_batch=measured.throughput_by_batch, quality_items=len(measured.outputs[0]))
    return _Evaluated(variant, measured.outputs, runner)


def measure_built(built, cfg, adapter, rec, work, truth_eval, reference, subset: bool):
    """(runner, Measured, quality) of a built variant; ``subset``: quality on the timing subset, accuracy taken
    from the reference (meaningful only when every item agrees, which the caller checks)."""
    ref = reference
    if subset:
        ref = [r[work.timed_idx] for r in reference]

    def worth_timing(outputs) -> bool:
        return ref is None or quality_ok(adapter.task, quality(adapter.task, outputs, ref, None), cfg)
    runner, measured = measure(lambda: open_runner(built.path, rec.providers, rec.intra_op_threads,
                                                   rec.inter_op_threads, cfg.on_provider_fallback,
                                                   built.optimized_offline), work, worth_timing, subset)
    outputs = measured.outputs
    if ref is None:
        return runner, measured, quality(adapter.task, outputs, outputs, truth_eval)
    q = quality(adapter.task, outputs, ref, None if subset else truth_eval)
    if subset and truth_eval is not None:
        q["accuracy"] = quality(adapter.task, reference, reference, truth_eval).get("accuracy")
    return runner, measured, q


def untimed(name: str, path: Path, adapter: ModelAdapter, rec, reason: str, on_fallback: str = "warn",
            open_it: bool = False) -> VariantReport:
    """A variant selected without measuring; ``open_it`` opens it once for the providers it really gets."""
    requested = actual = tuple(rec.providers)
    if open_it:
        actual = open_runner(path, rec.providers, rec.intra_op_threads, rec.inter_op_threads, on_fallback,
                             True).providers
    return VariantReport(name, path, adapter.task, path.stat().st_size, None, None, None, None, None, None,
                         agreement=1.0 if adapter.task == "classifier" else None,
                         cosine=1.0 if adapter.task == "embedder" else None, providers=tuple(actual),
                         requested_providers=requested, fell_back=bool(set(requested) - set(actual)), selected=True,
                         reason=reason)


def labelled_accuracy(cfg, adapter, path: Path, sample_paths: list[Path], truth: dict[str, str], rec) -> float | None:
    """Accuracy of ``path`` on the labelled sample (one pass, not timed)."""
    items, truth_idx = load_eval_sample(adapter, sample_paths, cfg.eval_samples, truth)
    runner = open_runner(path, rec.providers, rec.intra_op_threads, rec.inter_op_threads, cfg.on_provider_fallback,
                         True)
    outputs = run_outputs(runner, workload(adapter, items, cfg.batch_sizes, 1, 1).whole)
    return quality(adapter.task, outputs, outputs, truth_idx).get("accuracy")


def variant_keys(names: list[str], rec, cfg: OptimizeConfig) -> dict[str, str]:
    """The recipe key of each lossy variant (see ``tasks.optimize.known``)."""
    import onnxruntime

    return {n: recipe_key(n, rec.int8_settings, cfg, onnxruntime.__version__) for n in names if n not in LOSSLESS}


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
