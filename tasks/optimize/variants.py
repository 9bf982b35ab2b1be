"""Which variants to build on this hardware, and building each one: ``source -> out_dir/<name>.onnx`` + recipe."""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

from helios.models.base import ModelAdapter
from tasks.optimize.config import OptimizeConfig
from tasks.optimize.graph import convert_fp16, fuse_transformer, transformer_spec
from tasks.optimize.quantize import head_nodes, quantize_dynamic_model, quantize_static_model
from tasks.optimize.runtime import CUDA_EP, save_optimized
from tasks.prepare.export import write_recipe

PRECISION = {"fp32": "fp32", "fp32-fused": "fp32", "fp16": "fp16", "int8-dynamic": "int8-dynamic",
             "int8-static": "int8-static"}
# Transformers: only MatMuls with constant weights and the fused Attention's QKV projection are worth int8;
# Gather/EmbedLayerNormalization quantization saves memory but costs quality for no speed.
TRANSFORMER_INT8_OPS = ("MatMul", "Attention")


@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    recipe: dict
    optimized_offline: bool  # open with graph optimization disabled


def plan_variants(cfg: OptimizeConfig, adapter: ModelAdapter, profile, recommendation) -> tuple[list[str], dict[str, str]]:
    """(variants to build in order, {variant: why skipped}) from the config, the model and the hardware."""
    build, skipped = [], {}
    on_gpu = profile.has_gpu and CUDA_EP in recommendation.providers
    for name in cfg.variants:
        if name == "fp32-fused" and transformer_spec(adapter) is None:
            skipped[name] = "not a transformer: no Hugging Face config with attention heads to fuse"
        elif name == "int8-static" and transformer_spec(adapter) is not None and "variants" not in cfg.model_fields_set:
            skipped[name] = ("not built for a transformer unless optimize.variants names it: ONNX Runtime recommends "
                             "dynamic quantization for transformers (static activation scales clip their outliers: "
                             "mean cosine 0.936 on minilm, outside the budget)")
        elif name == "fp16" and not on_gpu:
            skipped[name] = ("fp16 only when the hardware profile has a GPU with the CUDA EP: ORT has no fast fp16 "
                             "CPU kernels" if not profile.has_gpu else
                             f"a GPU was found but the recommendation has no {CUDA_EP}: "
                             f"{recommendation.reasons.get('providers', '')}")
        elif name != "fp32" and PRECISION[name] not in recommendation.precisions:
            skipped[name] = (f"{PRECISION[name]} is not among the precisions recommended for this hardware "
                             f"({', '.join(recommendation.precisions)}): {recommendation.reasons.get('precisions', '')}")
        else:
            build.append(name)
    return build, skipped


def source_opset(onnx_path: Path, default: int = 17) -> int:
    recipe = onnx_path.with_suffix(".json")
    if recipe.is_file():
        return int(json.loads(recipe.read_text()).get("opset", default))
    return default


def build_variant(name: str, adapter: ModelAdapter, source: Path, fused: Path | None, out_dir: Path,
                  recommendation, calibration: list[dict], cfg: OptimizeConfig, exclude: list[str] | None = None) -> Built:
    """Build one variant from the prepared ONNX file (``fused``: the fused fp32 graph, when there is one)."""
    dst = out_dir / f"{name}.onnx"
    base = fused or source
    offline = False
    if name == "fp32":
        save_optimized(source, dst, recommendation.providers, recommendation.intra_op_threads)
        recipe = {"graph_optimization": {"level": "ORT_ENABLE_ALL", "saved_offline": True,
                                         "optimized_for_providers": list(recommendation.providers),
                                         "note": "extended/layout optimizations are provider- and ISA-specific: "
                                                 "rebuild on other hardware; open with optimization disabled"}}
        offline = True
    elif name == "fp32-fused":
        recipe = fuse_transformer(adapter, source, dst, transformer_spec(adapter), source_opset(source),
                                  skip_layer_norm=CUDA_EP in recommendation.providers)
    elif name == "fp16":
        recipe = convert_fp16(base, dst)
    elif name == "int8-dynamic":
        recipe = quantize_dynamic_model(base, dst, recommendation.int8_settings, int8_ops(fused),
                                        exclude if exclude is not None else default_exclude(base))
    elif name == "int8-static":
        # QDQ on the plain ONNX graph: the quantizer cannot type the fused contrib ops' outputs, and ORT fuses
        # QDQ pairs around standard ops at session start
        base = source
        recipe = quantize_static_model(source, dst, calibration, cfg.calibration, recommendation.int8_settings,
                                       ("MatMul",) if fused else None, default_exclude(source), cfg.percentile)
    else:
        raise ValueError(f"unknown variant {name!r}: expected one of {', '.join(PRECISION)}")
    recipe = {"variant": name, "derived_from": base.name if name != "fp32" else source.name,
              "source": adapter.recipe, **recipe, "versions": tool_versions()}
    write_recipe(dst, recipe)
    return Built(name, dst, recipe, offline)


def int8_ops(fused: Path | None) -> tuple[str, ...] | None:
    return TRANSFORMER_INT8_OPS if fused is not None else None


def default_exclude(path: Path) -> list[str]:
    """The output head stays fp32 (see tasks.optimize.quantize)."""
    import onnx

    return head_nodes(onnx.load(str(path), load_external_data=False))


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "python": platform.python_version()}
