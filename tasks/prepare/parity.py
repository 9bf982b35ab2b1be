"""Parity gate: the exported graph must agree with PyTorch on real inputs, or the run stops."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from helios.models.base import ModelAdapter
from tasks.prepare.config import PrepareConfig


class ParityError(RuntimeError):
    """The ONNX model disagrees with PyTorch beyond the configured tolerance."""


@dataclass(frozen=True)
class Parity:
    samples: int
    max_abs_logit_diff: float
    top1_agreement: float
    min_cosine: float | None  # embedders only

    def to_dict(self) -> dict:
        return asdict(self)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def measure_parity(adapter: ModelAdapter, session, batches: list[dict[str, np.ndarray]], module=None) -> Parity:
    """Run torch and ONNX Runtime on the same batches and compare logits (and embeddings for embedders);
    ``module``: the adapter's torch module when the caller already built it."""
    import torch

    module = adapter.torch_module() if module is None else module
    diffs, agree, cosines, n = [], 0, [], 0
    for feeds in batches:
        with torch.no_grad():
            ref = module(*(torch.from_numpy(feeds[name]) for name in adapter.input_names))
        ref = [t.numpy() for t in (ref if isinstance(ref, tuple) else (ref,))]
        got = session.run(feeds)
        diffs.append(float(np.abs(ref[0] - got[0]).max()))
        agree += int((ref[0].argmax(1) == got[0].argmax(1)).sum())
        n += len(ref[0])
        if adapter.task == "embedder":
            cosines.append(_cosine(ref[1], got[1]))
    min_cos = float(np.concatenate(cosines).min()) if cosines else None
    return Parity(n, max(diffs), agree / max(n, 1), min_cos)


def check_parity(parity: Parity, cfg: PrepareConfig, task: str) -> None:
    """Raise ParityError naming the measured value and the tolerance when the gate fails."""
    if task == "embedder":
        if parity.min_cosine is not None and parity.min_cosine < cfg.min_cosine:
            raise ParityError(f"ONNX export parity failed: min cosine to PyTorch {parity.min_cosine:.5f} < "
                              f"prepare.min_cosine={cfg.min_cosine} on {parity.samples} inputs")
        return
    if parity.max_abs_logit_diff > cfg.max_abs_logit_diff:
        raise ParityError(f"ONNX export parity failed: max |Δlogit| {parity.max_abs_logit_diff:.3g} > "
                          f"prepare.max_abs_logit_diff={cfg.max_abs_logit_diff} on {parity.samples} inputs")
    if parity.top1_agreement < cfg.min_top1_agreement:
        raise ParityError(f"ONNX export parity failed: top-1 agreement {parity.top1_agreement:.4f} < "
                          f"prepare.min_top1_agreement={cfg.min_top1_agreement} on {parity.samples} inputs")
