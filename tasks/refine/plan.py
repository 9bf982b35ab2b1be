"""Which of the requested methods apply to the model, decided before any file is read."""
from __future__ import annotations

from dataclasses import dataclass

from helios.models.base import ModelAdapter
from tasks.refine import sar, tta
from tasks.refine.bn_adapt import has_batchnorm
from tasks.refine.config import RefineConfig


@dataclass
class Plan:
    """What can run: the TTA policy (None: no TTA), the torch module and why TTT cannot run (None: it can)."""

    policy: tta.Policy | None
    module: object
    ttt_reason: str | None
    notes: list[str]


def plan_methods(cfg: RefineConfig, adapter: ModelAdapter) -> Plan:
    """Decide which requested methods apply to this model, before any file is read; skips become notes."""
    policy, module, ttt_reason, notes = None, None, "TTT not requested", []
    if "tta" in cfg.methods:
        try:
            policy = tta.build_policy(cfg.tta_policy, cfg.tta_merge, adapter.modality)
        except tta.PolicyError as exc:
            notes.append(f"TTA skipped: {exc}")
    if {"bn-adapt", "tent"} & set(cfg.methods):
        if adapter.modality == "text":
            ttt_reason = ("TTT skipped: BN-adapt and TENT adapt BatchNorm layers, and text encoders have none "
                          "(they use LayerNorm)")
        else:
            module = adapter.torch_module()
            ttt_reason = can_adapt(module, adapter.input_names)
            if ttt_reason is None and not has_batchnorm(module):
                ttt_reason = layernorm_reason(cfg, module)
        if ttt_reason:
            notes.append(ttt_reason)
    return Plan(policy, module, ttt_reason, notes)


def can_adapt(module, input_names: tuple[str, ...]) -> str | None:
    """Why TTT cannot run on the torch ``module`` (None: no PyTorch weights), as a note for the report, or None."""
    if module is None:
        return "TTT skipped: the model has no PyTorch weights (an ONNX file); BN-adapt and TENT need them"
    if not has_batchnorm(module) and not sar.has_layernorm(module):
        return ("TTT skipped: the model has neither BatchNorm nor LayerNorm layers, so BN-adapt, TENT and SAR have "
                "nothing to adapt")
    if len(input_names) != 1:
        return f"TTT skipped: the model takes {len(input_names)} inputs; adaptation supports single-input image models"
    return None


def layernorm_reason(cfg: RefineConfig, module: object) -> str | None:
    """Why a LayerNorm model (no BatchNorm) is not adapted under ``refine.adapt_layernorm``, or None.

    'auto' adapts a model that carries source patch statistics (patch alignment, then SAR: the combination the
    mnist-vit evaluation measured); SAR alone, on a model without them, is only run when asked for (true)."""
    if cfg.adapt_layernorm is False:
        return "TTT skipped: the model has LayerNorm and no BatchNorm, and refine.adapt_layernorm=false"
    if cfg.adapt_layernorm == "auto" and not sar.can_align(module, cfg.ln_align):
        return ("TTT skipped: the model has LayerNorm and no BatchNorm and carries no source patch statistics to align "
                "to; SAR alone is not evaluated here (it barely moved mnist-vit): refine.adapt_layernorm=true turns "
                "it on")
    return None
