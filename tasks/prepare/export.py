"""Export a model adapter's torch module to ONNX with dynamic axes, check it, and write its recipe beside it."""
from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path

from helios.models.base import ModelAdapter


def write_recipe(onnx_path: Path, recipe: dict) -> Path:
    """Every ONNX file Helios writes has ``<name>.json`` beside it saying how it was made."""
    path = onnx_path.with_suffix(".json")
    path.write_text(json.dumps(recipe, indent=2, sort_keys=True, default=str) + "\n")
    return path


def export_onnx(adapter: ModelAdapter, out_dir: Path, opset: int, module=None) -> Path:
    """``adapter -> out_dir/model.onnx`` via torch's TorchScript exporter (stable dynamic axes, no onnxscript rewrite);
    ``module``: the adapter's torch module when the caller already built it (export leaves it unchanged)."""
    import onnx
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    module = adapter.torch_module() if module is None else module
    example = tuple(torch.from_numpy(v) for v in adapter.example_inputs().values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings are about torch internals, not the user
        torch.onnx.export(
            module, example, str(path), dynamo=False, opset_version=opset, input_names=list(adapter.input_names),
            output_names=list(adapter.output_names), dynamic_axes=adapter.dynamic_axes(),
        )
    onnx.checker.check_model(str(path))
    write_recipe(path, {
        "variant": "exported", "source": adapter.recipe, "opset": opset, "dynamic_axes": adapter.dynamic_axes(),
        "inputs": list(adapter.input_names), "outputs": list(adapter.output_names), "exporter": "torch.onnx (torchscript)",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "python": platform.python_version()},
    })
    return path
