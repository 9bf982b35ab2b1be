"""Write an adapted PyTorch module back to ONNX (re-export) and gate it on parity with that module.

Re-export rather than patching initializers: the exporter folds BatchNorm into the preceding convolution, so the
adapted statistics and affine parameters have no initializer of their own to patch.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx

from helios.models.base import ModelAdapter
from tasks.prepare.config import PrepareConfig
from tasks.prepare.export import export_onnx, write_recipe
from tasks.prepare.parity import Parity, check_parity, measure_parity
from tasks.refine.context import RefineContext
from tasks.session import open_session


class _AdaptedAdapter:
    """The source adapter with its torch module replaced by the adapted one (what export and parity read)."""

    def __init__(self, adapter: ModelAdapter, module):
        self._adapter = adapter
        self._module = module

    def torch_module(self):
        """The adapted module, in eval mode."""
        return self._module.eval()

    def __getattr__(self, name):
        return getattr(self._adapter, name)


def source_opset(onnx_path: Path, default: int = 17) -> int:
    """The default-domain opset of the model the infer stage ran, so the adapted graph matches it."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def export_adapted(ctx: RefineContext, module, methods: list[str], sample: np.ndarray,
                   folder: Path | None = None) -> tuple[Path, Parity]:
    """``adapted module -> <folder>/model.onnx`` (default ``<work dir>/adapted``) plus its recipe; raises ParityError
    when ONNX disagrees with torch by more than ``refine.parity_max_abs_logit_diff``.

    ``sample`` (a model-ready batch) is what parity is measured on, with a CPU session of ``ctx.threads`` threads.
    """
    adapter = ctx.adapter
    if any(p.device.type != "cpu" for p in module.parameters()):  # adapted on a GPU: export and check a CPU copy
        module = copy.deepcopy(module).cpu()
    wrapped = _AdaptedAdapter(adapter, module)
    path = export_onnx(wrapped, folder or ctx.work_dir / "adapted", source_opset(ctx.onnx_path))  # type: ignore[arg-type]
    session = open_session(path, ("CPUExecutionProvider",), ctx.threads)
    name = adapter.input_names[0]
    step = min(64, ctx.cfg.batch_size)  # the stage's batch: smaller for large inputs (parity does not depend on it)
    feeds = [{name: sample[i:i + step]} for i in range(0, len(sample), step)]
    parity = measure_parity(wrapped, session, feeds)  # type: ignore[arg-type]
    check_parity(parity, PrepareConfig(max_abs_logit_diff=ctx.cfg.parity_max_abs_logit_diff), adapter.task)
    write_recipe(path, {"variant": "test-time-adapted", "source": adapter.recipe, "source_onnx": str(ctx.onnx_path),
                        "methods": methods, "parity": parity.to_dict(), "opset": source_opset(path)})
    return path, parity
