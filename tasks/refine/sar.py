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

LayerNorm normalizes each item by itself, so its layers have no statistics to estimate and the answer for one item
does not depend on its batch mates. The last LayerNorm (right before the head) is left alone, as SAR leaves the top
of a ViT: adapting it moves the logits directly.

Patch alignment, the closed-form companion that plays BN-adapt's role (only for a model that ships source
statistics): entropy minimization alone barely moves a small ViT under a strong shift (fog, brightness: the source
is confidently wrong). A model whose torch module carries ``patch_statistics`` (the mean and covariance of the
flattened input patches its patch embedding sees on clean training data; the built-in ``mnist-vit`` does) gets its
target patches whitened and re-coloured to those moments first (CORAL, Sun et al., AAAI 2016, applied to the patch
embedding's input; closed form, from the whole learning sample, order- and batch-independent). The map is linear,
so it is folded into the patch embedding's weight and bias: the adapted model has the source's graph. A model
without such statistics gets SAR alone.
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
        norm = (torch.norm(torch.stack([g.norm(2) for g in grads]), 2) if grads
                else torch.tensor(0.0, device=self.params[0].device))
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


# Patch alignment (CORAL on the patch embedding's input), for models that carry source patch statistics

def patch_embedding(module: nn.Module) -> nn.Conv2d | None:
    """The patch embedding named by the module's ``patch_statistics`` (None: no statistics, or not a patchify conv:
    kernel == stride, with a bias, no padding, dilation or groups)."""
    stats = getattr(module, "patch_statistics", None)
    layer = None if stats is None else dict(module.named_modules()).get(stats.get("layer", ""))
    if not isinstance(layer, nn.Conv2d) or layer.kernel_size != layer.stride or layer.bias is None:
        return None
    unpadded = layer.padding == "valid" or not any(layer.padding)
    return layer if unpadded and layer.groups == 1 and all(d == 1 for d in layer.dilation) else None


def can_align(module: nn.Module, enabled: bool) -> bool:
    """Whether patch alignment runs on ``module``: ``refine.ln_align`` (``enabled``) and a usable patch embedding."""
    return enabled and patch_embedding(module) is not None


def patches(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(items x patches, in_channels x kernel) float64: the flattened input patches ``layer`` multiplies."""
    flat = nn.functional.unfold(x, layer.kernel_size, stride=layer.stride)
    return flat.transpose(1, 2).reshape(-1, flat.shape[1]).double()


def patch_moments(layer: nn.Conv2d, chunks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the input patches over all ``chunks`` (accumulated, float64)."""
    n, total, outer = 0, None, None
    for x in chunks:
        p = patches(layer, x)
        n += len(p)
        total = p.sum(0) if total is None else total + p.sum(0)
        outer = p.T @ p if outer is None else outer + p.T @ p
    mean = total / n
    return mean, (outer - n * torch.outer(mean, mean)) / max(n - 1, 1)


def _matrix_power(cov: torch.Tensor, power: float, floor: float) -> torch.Tensor:
    """(``cov`` + ``floor`` I) ** ``power`` (symmetric eigendecomposition)."""
    values, vectors = torch.linalg.eigh(cov)
    return (vectors * (values.clamp_min(0) + floor) ** power) @ vectors.T


def coloring_map(source_cov: torch.Tensor, target_cov: torch.Tensor, eps: float) -> torch.Tensor:
    """A with A target_cov A^T ~ source_cov: whiten with the target's covariance, re-colour with the source's. Both
    get ``eps`` x the source's mean variance added, so near-empty target directions are not blown up."""
    floor = eps * float(torch.diagonal(source_cov).mean()) + 1e-12
    return _matrix_power(source_cov, 0.5, floor) @ _matrix_power(target_cov, -0.5, floor)


@torch.no_grad()
def align_patch_embedding(module: nn.Module, chunks: list[torch.Tensor], eps: float) -> bool:
    """Fold p -> A (p - target mean) + source mean into the patch embedding (W -> W A, b -> b + W (mu_s - A mu_t));
    False (nothing changed) when the module has no usable ``patch_statistics`` or the target's moments are not
    finite (NaN/Inf inputs)."""
    layer = patch_embedding(module)
    if layer is None:
        return False
    stats = module.patch_statistics
    target_mean, target_cov = patch_moments(layer, chunks)
    device = target_mean.device  # plain attributes, not buffers: they stay on the CPU when the module moves
    source_mean, source_cov = stats["mean"].double().to(device), stats["cov"].double().to(device)
    finite = bool(torch.isfinite(target_mean).all() and torch.isfinite(target_cov).all())
    if source_mean.shape != target_mean.shape or not finite:
        return False
    a = coloring_map(source_cov, target_cov, eps)
    weight = layer.weight.double().reshape(layer.out_channels, -1)
    layer.bias.copy_(layer.bias.double() + weight @ (source_mean - a @ target_mean))
    layer.weight.copy_((weight @ a).reshape(layer.weight.shape))
    return True
