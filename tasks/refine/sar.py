"""LayerNorm adaptation after SAR (Niu et al., ICLR 2023, "Towards Stable Test-Time Adaptation in Dynamic Wild
World"): entropy minimization on LayerNorm's affine parameters, made safe for the models that have no BatchNorm.

Imports only torch. What SAR adds to TENT, each against a failure it measured on ViTs and with batch size 1:

* Reliable entropy: items whose entropy is above ``margin`` (a share of ln(classes)) are left out of the loss; their
  gradients are large and noisy and drive collapse.
* Sharpness-aware steps (SAM): the parameters are first moved ``rho`` along the normalized gradient, the loss is
  recomputed there on the items that stayed reliable, and that gradient makes the step — a flat minimum of the
  entropy, not one that a few items' noisy gradients pull into collapse.
* Model recovery: an exponential moving average of the step's loss that falls below ``reset_entropy`` means the
  model became trivially sure of everything; the caller restores the state it started from.

LayerNorm normalizes each item by itself, so there are no statistics to estimate (nothing like BN-adapt) and the
answer for one item does not depend on its batch mates. The last LayerNorm (right before the head) is left alone,
as SAR leaves the top of a ViT: adapting it moves the logits directly.
"""
from __future__ import annotations

import torch
from torch import nn

from tasks.refine.tent import NonFinite, softmax_entropy

NORMS = (nn.LayerNorm, nn.GroupNorm)


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every LayerNorm/GroupNorm with affine parameters, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, NORMS) and getattr(m, "weight", None) is not None]


def has_layernorm(model: nn.Module) -> bool:
    return bool(norm_layers(model))


def configure_model(model: nn.Module) -> nn.Module:
    """Eval mode, gradients only for the adapted norms' weight and bias (all but the last norm)."""
    model.eval()
    model.requires_grad_(False)
    for _, layer in adapted_layers(model):
        layer.weight.requires_grad_(True)
        if layer.bias is not None:
            layer.bias.requires_grad_(True)
    return model


def adapted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = norm_layers(model)
    return layers[:-1] if len(layers) > 1 else layers


def collect_params(model: nn.Module) -> tuple[list[nn.Parameter], list[str]]:
    """The parameters SAR updates, with their names (for the report and tests)."""
    params, names = [], []
    for name, layer in adapted_layers(model):
        for kind in ("weight", "bias"):
            value = getattr(layer, kind)
            if value is not None:
                params.append(value)
                names.append(f"{name}.{kind}")
    return params, names


class SAM:
    """Sharpness-aware minimization (Foret et al., 2021) around a base optimizer, in two explicit steps."""

    def __init__(self, params: list[nn.Parameter], base: torch.optim.Optimizer, rho: float):
        self.params, self.base, self.rho = params, base, rho
        self._moved: list[torch.Tensor | None] = []

    def zero_grad(self) -> None:
        self.base.zero_grad(set_to_none=True)

    @torch.no_grad()
    def first_step(self) -> None:
        """Move to the worst point within ``rho`` of the current parameters (along the gradient)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2) if grads else torch.tensor(0.0)
        scale = self.rho / (norm + 1e-12)
        self._moved = []
        for p in self.params:
            e = None if p.grad is None else p.grad * scale
            if e is not None:
                p.add_(e)
            self._moved.append(e)
        self.zero_grad()

    @torch.no_grad()
    def undo(self) -> None:
        """Return to the parameters before ``first_step`` (no step taken)."""
        for p, e in zip(self.params, self._moved):
            if e is not None:
                p.sub_(e)
        self._moved = []

    def second_step(self) -> None:
        """Return to the parameters and take the base optimizer's step with the gradient found there."""
        self.undo()
        self.base.step()
        self.zero_grad()

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)


def _reliable_loss(model: nn.Module, chunks: list[torch.Tensor], keep: torch.Tensor | None, margin: float):
    """(loss, entropy, kept mask): mean entropy of the items below ``margin`` among ``keep`` (all when None)."""
    entropy = softmax_entropy(torch.cat([model(x) for x in chunks]))
    mask = entropy.detach() < margin
    if keep is not None:
        mask &= keep
    loss = entropy[mask].mean() if mask.any() else None
    if loss is not None and not torch.isfinite(loss):
        raise NonFinite(f"entropy loss is {float(loss.detach())}")
    return loss, entropy, mask


def _check_grads(params: list[nn.Parameter]) -> None:
    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
        raise NonFinite("a LayerNorm gradient is NaN or Inf")


def forward_and_adapt(model: nn.Module, chunks: list[torch.Tensor], optimizer: SAM, margin: float) -> float | None:
    """One SAR step over all items of ``chunks``; returns the second (sharpness-aware) loss, None when no item was
    reliable (nothing is stepped then). Raises NonFinite on NaN/Inf (the caller restores the model)."""
    optimizer.zero_grad()
    loss, _, first = _reliable_loss(model, chunks, None, margin)
    if loss is None:
        return None
    loss.backward()
    _check_grads(optimizer.params)
    optimizer.first_step()
    second_loss, _, _ = _reliable_loss(model, chunks, first, margin)
    if second_loss is None:  # every reliable item became unreliable at the perturbed point: undo, no step
        optimizer.undo()
        return None
    second_loss.backward()
    _check_grads(optimizer.params)
    optimizer.second_step()
    return float(second_loss.detach())


def new_optimizer(model: nn.Module, lr: float, rho: float) -> SAM:
    params, _ = collect_params(model)
    return SAM(params, torch.optim.SGD(params, lr=lr, momentum=0.9), rho)
