"""Graph-level variants: transformer fusions and fp16. Each is ``source path -> variant path`` plus a recipe dict.

Transformer fusions (Attention, EmbedLayerNormalization, BiasGelu, and SkipLayerNormalization for CUDA only — on
CPU ORT's kernel for it is slower than Add + LayerNormalization, see ``tasks.session``) come from ONNX Runtime's
transformer optimizer, which matches the graph that eager attention exports to. Recent transformers export
scaled-dot-product attention as a pattern the optimizer does not recognise (0 Attention fused), so when the torch
module is at hand the fused variant is exported again with eager attention — same weights, same math — and fused
from that. Unmasked encoders (ViT, DeiT) need one more step: their eager attention scales the scores with a Mul
after the QK MatMul, and the optimizer matches unmasked attention only when the scale is a Div, so that Mul is
rewritten as the equal Div first (``divide_attention_scale``). Its quality is measured against the fp32 reference
like every other variant.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from helios.models.base import ModelAdapter

log = logging.getLogger(__name__)

# ORT optimizer model types for Hugging Face `model_type`s; encoders without an entry use the BERT fusions.
_ORT_MODEL_TYPES = {"bart": "bart", "gpt2": "gpt2", "t5": "t5", "vit": "vit", "swin": "swin", "clip": "clip"}


@dataclass(frozen=True)
class TransformerSpec:
    """What the fusion passes need to know about a Hugging Face transformer."""

    model_type: str  # the ORT optimizer's model type
    num_heads: int
    hidden_size: int


def transformer_spec(adapter: ModelAdapter) -> TransformerSpec | None:
    """The adapter's transformer shape from its Hugging Face ``config.json``; None for other models."""
    model_dir = getattr(adapter, "model_dir", None)
    config = Path(model_dir) / "config.json" if model_dir else None
    if config is None or not config.is_file():
        return None
    data = json.loads(config.read_text())
    heads, hidden = data.get("num_attention_heads"), data.get("hidden_size")
    if not heads or not hidden:
        return None
    return TransformerSpec(_ORT_MODEL_TYPES.get(data.get("model_type", ""), "bert"), int(heads), int(hidden))


def export_eager(adapter: ModelAdapter, path: Path, opset: int) -> bool:
    """Export the adapter's torch module with eager attention to ``path``; False when there is no torch module."""
    import onnx
    import torch

    module = adapter.torch_module()
    if module is None:
        return False
    for sub in module.modules():
        if hasattr(sub, "set_attn_implementation") and hasattr(sub, "config"):
            sub.set_attn_implementation("eager")
    example = tuple(torch.from_numpy(v) for v in adapter.example_inputs().values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings are about torch internals, not the user
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=opset,
                          input_names=list(adapter.input_names), output_names=list(adapter.output_names),
                          dynamic_axes=adapter.dynamic_axes())
    onnx.checker.check_model(str(path))
    return True


def divide_attention_scale(model, head_size: int) -> int:
    """Rewrite ``Softmax(MatMul(q, k) * c)`` as ``Softmax(MatMul(q, k) / (1 / c))`` in the ONNX ``model`` (in
    place) where ``c`` is ``head_size ** -0.5``; return how many were rewritten.

    ORT's Attention fusion matches unmasked attention only as Softmax <- Div <- MatMul (``fusion_attention.py``;
    with a mask, Softmax <- Add <- Mul <- MatMul is matched too). It never reads that constant: the fused Attention
    scales by its default ``1 / sqrt(head_size)``, so any other scale is left alone (unfused, and still correct)."""
    import numpy as np
    from onnx import numpy_helper
    from onnxruntime.transformers.onnx_model import OnnxModel

    graph, count = OnnxModel(model), 0
    for softmax in graph.get_nodes_by_op_type("Softmax"):
        mul = graph.get_parent(softmax, 0)
        if mul is None or mul.op_type != "Mul":
            continue
        for i, scores in enumerate(graph.get_parent(mul, j) for j in (0, 1)):
            scale = graph.get_constant_value(mul.input[1 - i])
            if (scores is None or scores.op_type != "MatMul" or not isinstance(scale, np.ndarray) or scale.size != 1
                    or not np.isclose(scale.item(), head_size ** -0.5, rtol=1e-6)):
                continue
            divisor = numpy_helper.from_array((1 / scale).astype(scale.dtype), mul.output[0] + "_divisor")
            graph.add_initializer(divisor)
            mul.op_type = "Div"
            mul.input[:] = [scores.output[0], divisor.name]
            count += 1
            break
    return count


def fuse_transformer(adapter: ModelAdapter, source: Path, dst: Path, spec: TransformerSpec, opset: int,
                     skip_layer_norm: bool = True) -> dict:
    """Write the fused model to ``dst``; return its recipe (which graph was fused, and what was fused).

    ``skip_layer_norm=False`` leaves residual Add + LayerNormalization unfused (faster on CPU)."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(spec.model_type)
    options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = skip_layer_norm

    eager = dst.with_name(dst.stem + ".eager.onnx")
    from_eager = export_eager(adapter, eager, opset)
    graph = eager if from_eager else source
    proto = onnx.load(str(graph))
    if from_eager:
        eager.unlink()
    divided = divide_attention_scale(proto, spec.hidden_size // spec.num_heads)
    model = optimize_model(proto, model_type=spec.model_type, num_heads=spec.num_heads,
                           hidden_size=spec.hidden_size, opt_level=0, optimization_options=options)
    model.save_model_to_file(str(dst))
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    if not fused.get("Attention") and not fused.get("MultiHeadAttention"):
        log.warning("transformer optimizer fused no attention in %s (%s)", graph.name, fused)
    return {"fusion": {"tool": "onnxruntime.transformers.optimizer", "model_type": spec.model_type,
                       "num_heads": spec.num_heads, "hidden_size": spec.hidden_size, "opt_level": 0,
                       "skip_layer_norm": skip_layer_norm, "attention_scales_as_div": divided,
                       "fused_operators": fused,
                       "graph": "re-exported with eager attention" if from_eager else "the prepared ONNX file"}}


def convert_fp16(source: Path, dst: Path) -> dict:
    """fp16 weights and compute, fp32 inputs/outputs (so callers feed the same arrays); ops without fp16
    kernels or with fp16 range problems stay fp32 (ORT's default block list)."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))
    return {"fp16": {"tool": "onnxruntime.transformers OnnxModel.convert_float_to_float16", "keep_io_types": True,
                     "source": source.name}}
