"""int8-dynamic missing the quality budget: rebuild it with the most sensitive MatMuls kept in fp32."""
from __future__ import annotations

import math
from pathlib import Path

from tasks.optimize.evaluate import quality, run_outputs
from tasks.optimize.quantize import rank_sensitive, weight_nodes
from tasks.optimize.result import VariantReport
from tasks.optimize.runtime import open_runner
from tasks.optimize.select import quality_problem
from tasks.optimize.variants import Built, build_variant
from tasks.prepare.export import write_recipe


def retry_sensitive(built: Built, cfg, adapter, source, fused, out_dir, rec, calibration, work, reference,
                    first: dict) -> Built:
    """Keep the MatMuls with the worst measured quantization error in fp32, a quarter of them per retry, until the
    variant is within budget or ``optimize.int8_retries`` is spent; the attempts go into its recipe. ``first`` is
    the quality the caller measured for ``built`` (the first attempt)."""
    exclude = list(built.recipe["quantization"]["nodes_excluded"])
    ranking: list[str] | None = None
    attempts, q = [], first
    for attempt in range(cfg.int8_retries + 1):
        if attempt:
            runner = open_runner(built.path, ("CPUExecutionProvider",), rec.intra_op_threads)
            q = quality(adapter.task, run_outputs(runner, work.whole), reference, None)
        probe = VariantReport(built.name, built.path, adapter.task, 0, None, None, None, 1.0, 1, None,
                              agreement=q["agreement"], cosine=q.get("cosine"))
        attempts.append({"excluded": len(exclude), **{k: round(v, 5) for k, v in q.items() if k != "accuracy"}})
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
    """The MatMuls with constant weights in ``path``."""
    import onnx

    return [n.name for n in weight_nodes(onnx.load(str(path), load_external_data=False)) if n.op_type == "MatMul"]
