"""TENT (Wang et al., ICLR 2021): minimize prediction entropy by updating only BatchNorm's affine parameters.

Imports only torch. Two deliberate departures from the reference implementation, both against its known failure
modes (collapse on non-i.i.d. streams and on tiny batches):

* BatchNorm normalizes with the running statistics that BN-adapt estimated over the whole target set, not with the
  statistics of the current batch; a batch's composition (one class, one file) then cannot move the normalization.
* One Adam step sees ``tent_batch_size`` items however they are chunked for compute: the step's loss is built over
  all its chunks, so a compute batch of 1 gives the same step as a compute batch of 128.

The caller mixes the items across the whole set before batching, guards against non-finite values (``NonFinite``)
and checks the adapted model for collapse.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from tasks.refine.bn_adapt import batchnorm_layers


GRAPH_BYTES = 8 << 20  # a step whose inputs are larger keeps one chunk's graph at a time (28x28 digits never do)


class NonFinite(RuntimeError):
    """A loss or gradient became NaN/Inf: the adaptation must be undone."""


def configure_model(model: nn.Module) -> nn.Module:
    """Eval mode (BN uses its running statistics), gradients only for BN weight and bias."""
    model.eval()
    model.requires_grad_(False)
    for layer in batchnorm_layers(model):
        if layer.affine:
            layer.weight.requires_grad_(True)
            layer.bias.requires_grad_(True)
    return model


def collect_params(model: nn.Module) -> tuple[list[nn.Parameter], list[str]]:
    """The BN affine parameters TENT updates, with their names (for the report and tests)."""
    params, names = [], []
    for module_name, layer in model.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.affine:
            for kind in ("weight", "bias"):
                params.append(getattr(layer, kind))
                names.append(f"{module_name}.{kind}")
    return params, names


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-item entropy of softmax(logits), in nats."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def forward_and_adapt(model: nn.Module, chunks: list[torch.Tensor], optimizer: torch.optim.Optimizer,
                      max_grad_norm: float, entropy_limit: float | None = None, diversity: float = 0.0) -> float:
    """One Adam step on the mean entropy of all items in ``chunks``; returns that mean entropy.

    ``entropy_limit`` (nats) leaves out items above it, as EATA/SAR do: the most uncertain items give the noisiest
    gradients. ``diversity`` weighs SHOT's information-maximization term, minus the entropy of the step's mean
    prediction: it rewards spreading predictions over classes, which is what a collapsing TENT stops doing.
    Raises NonFinite when the loss or a gradient is NaN/Inf (nothing is stepped then).
    """
    optimizer.zero_grad(set_to_none=True)
    if len(chunks) > 1 and sum(x.nbytes for x in chunks) > GRAPH_BYTES:
        return _adapt_by_chunk(model, chunks, optimizer, max_grad_norm, entropy_limit, diversity)
    logits = torch.cat([model(x) for x in chunks])  # one graph per step: the loss is the same however chunked
    entropy = softmax_entropy(logits)
    kept = entropy if entropy_limit is None else entropy[entropy.detach() < entropy_limit]
    loss = kept.sum() / len(entropy)
    if diversity:
        mean = logits.softmax(1).mean(0)
        loss = loss + diversity * (mean * torch.log(mean + 1e-12)).sum()
    if not torch.isfinite(loss):
        raise NonFinite(f"entropy loss is {float(loss.detach())}")
    if not loss.requires_grad:
        return float(entropy.detach().mean())
    loss.backward()
    return _step(optimizer, max_grad_norm, entropy)


def _adapt_by_chunk(model: nn.Module, chunks: list[torch.Tensor], optimizer: torch.optim.Optimizer,
                    max_grad_norm: float, entropy_limit: float | None, diversity: float) -> float:
    """``forward_and_adapt`` holding one chunk's graph at a time (large inputs: a 224x224 ResNet-18 keeps about
    30 MB per item for the backward pass). A pass without gradients gives the step's mean prediction; then each
    chunk's loss is its share of the entropy plus the diversity term's first-order part around that mean, whose
    gradients add up to those of the whole step's loss. One more forward pass per item."""
    with torch.no_grad():
        logits = torch.cat([model(x) for x in chunks])
    entropy, n = softmax_entropy(logits), len(logits)
    mean = logits.softmax(1).mean(0)
    loss = entropy[entropy < entropy_limit].sum() / n if entropy_limit is not None else entropy.sum() / n
    if diversity:
        loss = loss + diversity * (mean * torch.log(mean + 1e-12)).sum()
    if not torch.isfinite(loss):
        raise NonFinite(f"entropy loss is {float(loss)}")
    pull = diversity * (torch.log(mean + 1e-12) + mean / (mean + 1e-12)) / n  # d(diversity term) / d(item's probs)
    for x in chunks:
        out = model(x)
        part = softmax_entropy(out)
        part = part if entropy_limit is None else part[part.detach() < entropy_limit]
        chunk_loss = part.sum() / n + (out.softmax(1) * pull).sum()
        if chunk_loss.requires_grad:
            chunk_loss.backward()
    return _step(optimizer, max_grad_norm, entropy)


def _step(optimizer: torch.optim.Optimizer, max_grad_norm: float, entropy: torch.Tensor) -> float:
    """Check the gradients, clip and step; the step's mean entropy."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if any(not torch.isfinite(p.grad).all() for p in params):
        raise NonFinite("a BatchNorm gradient is NaN or Inf")
    if params:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
    return float(entropy.detach().mean())


def copy_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Deep copies of the model and optimizer state, for ``reset``."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())


def reset(model: nn.Module, optimizer: torch.optim.Optimizer, state: tuple[dict, dict]) -> None:
    """Undo adaptation: restore the copied model and optimizer state (episodic reset, or revert after a failure)."""
    model_state, optimizer_state = state
    model.load_state_dict(model_state, strict=True)
    optimizer.load_state_dict(optimizer_state)
