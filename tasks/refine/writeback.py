"""Write an adapted PyTorch module back to ONNX (re-export) and gate it on parity with that module.

Re-export rather than patching initializers: the exporter folds BatchNorm into the preceding convolution, so the
adapted statistics and affine parameters have no initializer of their own to patch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from helios.models.base import ModelAdapter
from tasks.prepare.config import PrepareConfig
from tasks.prepare.export import export_onnx, write_recipe
from tasks.prepare.parity import Parity, check_parity, measure_parity


class _AdaptedAdapter:
    """The source adapter with its torch module replaced by the adapted one (what export and parity read)."""

    def __init__(self, adapter: ModelAdapter, module):
        self._adapter = adapter
        self._module = module

    def torch_module(self):
        return self._module.eval()

    def __getattr__(self, name):
        return getattr(self._adapter, name)


def source_opset(onnx_path: Path, default: int = 17) -> int:
    """The default-domain opset of the model the infer stage ran, so the adapted graph matches it."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def export_adapted(adapter: ModelAdapter, module, source_onnx: Path, out_dir: Path, methods: list[str],
                   sample: np.ndarray, max_abs_logit_diff: float, open_session) -> tuple[Path, Parity]:
    """``adapted module -> out_dir/model.onnx`` plus its recipe; raises ParityError when ONNX disagrees with torch.

    ``sample`` (a model-ready batch) is what parity is measured on; ``open_session(path)`` opens an ORT session.
    """
    wrapped = _AdaptedAdapter(adapter, module)
    path = export_onnx(wrapped, out_dir, source_opset(source_onnx))  # type: ignore[arg-type]
    session = open_session(path)
    name = adapter.input_names[0]
    feeds = [{name: sample[i:i + 64]} for i in range(0, len(sample), 64)]
    parity = measure_parity(wrapped, session, feeds)  # type: ignore[arg-type]
    check_parity(parity, PrepareConfig(max_abs_logit_diff=max_abs_logit_diff), adapter.task)
    write_recipe(path, {"variant": "test-time-adapted", "source": adapter.recipe, "source_onnx": str(source_onnx),
                        "methods": methods, "parity": parity.to_dict(), "opset": source_opset(path)})
    return path, parity
