"""Config of the prepare (export to ONNX + parity gate) stage."""
from __future__ import annotations

from pydantic import Field

from helios.settings import StageConfig


class PrepareConfig(StageConfig):
    opset: int = Field(17, ge=13, le=23, description="ONNX opset of the exported graph.")
    parity_samples: int = Field(64, ge=1, description="Files taken from the input to compare PyTorch and ONNX.")
    max_abs_logit_diff: float = Field(1e-3, gt=0, description="Classifier gate: largest |logit_torch - logit_onnx|.")
    min_top1_agreement: float = Field(1.0, ge=0, le=1, description="Classifier gate: share of equal top-1 labels.")
    min_cosine: float = Field(0.999, ge=-1, le=1, description="Embedder gate: smallest cosine torch vs onnx.")
