"""Config of the TTA/TTT refinement stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from helios.settings import StageConfig

Method = Literal["tta", "bn-adapt", "tent"]


class RefineConfig(StageConfig):
    """Settings of the refine stage (``refine:`` in the run config)."""

    enabled: bool = Field(True, description="false: the stage passes predictions through (compare with/without).")
    threshold: float = Field(0.9, ge=0, le=1, description="Items below this confidence are routed to refinement.")
    methods: tuple[Method, ...] = Field(("bn-adapt", "tent", "tta"), description="tent implies bn-adapt statistics.")
    reinfer: Literal["routed", "all"] = Field(
        "all", description="Which items the adapted model re-infers: every file (default: under a shift most errors "
                           "are confident ones), or only the routed ones.")
    batch_size: int = Field(256, ge=1, description="Items per forward pass (compute only: results do not depend on it).")
    adapt_max_items: int = Field(2048, ge=1, description="BN-adapt and TENT learn from at most this many items "
                                 "(a class-mixed sample); every item is still answered.")
    adapt_max_mb: int = Field(256, ge=1, description="... and at most this many MB of model-ready inputs (the sample "
                              "is held in memory: 224x224 RGB float32 -> about 445 items).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the torch work runs (BN-adapt, TENT/SAR, "
                                                   "the mixture check): auto = the GPU when the stage's providers "
                                                   "include CUDA and torch sees one, else the CPU.")
    reuse_adaptation: bool = Field(True, description="Reruns with the same source model and settings reuse the kept "
                                   "adaptation (no torch work) and answer new files with it; false adapts again.")
    readapt_share: float = Field(0.2, ge=0, le=1, description="Advise adapting again when more than this share of "
                                 "the files were not in the set the kept adaptation learned from.")
    readapt_auto_share: float = Field(0.5, ge=0, le=1, description="Adapt again without being asked when more than "
                                      "this share of the files are new: most of the set is then another set, not "
                                      "an increment of the one the adaptation learned from (1: never).")
    ttt_min_routed_share: float = Field(0.05, ge=0, le=1, description="TTT adapts a set with at least this share of "
                                        "items below the threshold ...")
    ttt_min_shift: float = Field(0.05, ge=0, description="... or whose BN statistics moved at least this much "
                                 "(symmetric KL, largest layer; clean digits ~0.015, fog ~1).")
    # TTA
    tta_policy: str = Field("standard", description="Named view policy: light | standard | wide (images).")
    tta_merge: Literal["mean", "gmean", "max", "tsharpen"] = "mean"
    tta_adaptive: bool = Field(True, description="Augment only items still below the threshold (else every item).")
    # BN-adapt
    bn_prior: float = Field(16.0, ge=0, description="Source statistics count as this many target samples.")
    # TENT
    tent_lr: float = Field(5e-3, gt=0, description="Adam learning rate on BatchNorm weight and bias.")
    tent_steps: int = Field(1, ge=1, description="Adam steps per adaptation batch.")
    tent_batch_size: int = Field(32, ge=1, description="Items per Adam step (gradients accumulate over compute batches).")
    tent_epochs: int = Field(3, ge=1, description="Passes over the whole (class-mixed) set in the first round.")
    tent_entropy_limit: float | None = Field(
        0.4, gt=0, le=1, description="Leave items above this share of ln(classes) out of the loss (EATA/SAR); None: all.")
    tent_diversity: float = Field(0.5, ge=0, description="Weight of SHOT's diversity term (entropy of the mean "
                                  "prediction); 0 is plain TENT. 0.5 was chosen on the dev corruptions.")
    tent_max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping (L2 norm over the BN parameters).")
    # LayerNorm models (no BatchNorm): "tent" runs patch alignment and SAR's steps on the LayerNorm affine
    # parameters (tasks/refine/sar.py)
    adapt_layernorm: Literal["auto"] | bool = Field(
        "auto", description="Adapt models that have LayerNorm and no BatchNorm: patch alignment, then SAR. 'auto' "
        "adapts those that carry source patch statistics (the built-in mnist-vit: MNIST-C test mean error 37.5 -> "
        "19.3 %, README), where the evaluation backs it; true also runs SAR alone on models without them (not "
        "evaluated here); false never.")
    ln_align: bool = Field(True, description="Round 1 first re-standardizes the input patches of a LayerNorm model "
                           "that carries source patch statistics (the built-in mnist-vit) to them: CORAL on the patch "
                           "embedding's input, folded into its weights. Models without statistics get SAR alone.")
    ln_align_eps: float = Field(1e-3, gt=0, description="Patch alignment: added to both covariances' eigenvalues, as "
                                "a share of the source's mean variance (bounds the whitening of near-empty directions).")
    sar_epochs: int = Field(1, ge=0, description="SAR passes over the set in round 1 (later rounds: one); 0: patch "
                            "alignment alone.")
    sar_lr: float = Field(5e-2, gt=0, description="SGD (momentum 0.9) learning rate on LayerNorm weight and bias "
                          "(5e-2, 1 pass: chosen on the dev corruptions; 1e-3, SAR's ImageNet rate, barely moves "
                          "mnist-vit).")
    sar_rho: float = Field(0.05, gt=0, description="SAM neighbourhood radius.")
    sar_margin: float = Field(0.4, gt=0, le=1, description="Reliable items: entropy below this share of ln(classes).")
    sar_reset_share: float = Field(0.03, ge=0, le=1, description="Model recovery: restore the model when the moving "
                                   "average of the step loss falls below this share of ln(classes) (SAR: 0.2 nats "
                                   "for 1,000 classes).")
    # Safety
    collapse_ratio: float = Field(0.9, ge=0, le=1, description="Revert a method when the entropy of its predicted-class "
                                  "histogram falls below this share of the model's before it (predictions piling "
                                  "into few classes).")
    collapse_min_entropy: float = Field(1e-3, ge=0, description="Revert when mean prediction entropy (nats) falls below.")
    parity_max_abs_logit_diff: float = Field(1e-3, gt=0, description="Adapted ONNX vs PyTorch gate; failing it reverts.")
    # Iteration and budget
    max_rounds: int = Field(2, ge=1, description="Refinement rounds while items stay below the threshold.")
    max_multiplier: float = Field(40.0, gt=0, description="Compute budget: passes per scanned item over plain inference.")
    seed: int = 0

    @field_validator("methods")
    @classmethod
    def _distinct(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(methods)) != len(methods):
            raise ValueError(f"refine.methods={list(methods)} names a method twice: list each of tta, bn-adapt, tent once")
        return methods
