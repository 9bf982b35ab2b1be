"""Built-in ``mnist-vit``: a small Vision Transformer digit classifier with LayerNorm and no BatchNorm.

It exists so the refine stage's LayerNorm adaptation (``tasks/refine/sar.py``) is evaluated on the kind of network
transformers and ConvNeXt are: pre-norm blocks, attention, a class token. Weights are trained here by
``python -m helios.models.train_mnist_vit`` on the same 4,000 digits as ``mnist-cnn``; input and preprocessing are
those of ``mnist-cnn`` (one 28x28 grey channel, the same normalization).

``weights/mnist_vit_patches.pt`` holds the source statistics the refine stage's patch alignment reads (mean and
covariance of the 4x4 input patches of the clean training digits), written once by ``python -m
helios.models.mnist_vit``; the torch module carries them as ``patch_statistics`` (not part of its state_dict or graph).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helios.models.mnist_cnn import DIGITS, MnistCnn

WEIGHTS = Path(__file__).parent / "weights" / "mnist_vit.pt"
PATCH_STATISTICS = WEIGHTS.with_name("mnist_vit_patches.pt")
PATCH, DIM, DEPTH, HEADS, MLP = 4, 64, 4, 4, 128


def build_network():
    """Patch embedding (4x4 patches: 49 tokens), a class token, 4 pre-norm blocks, a final LayerNorm and a head.

    Attention is written out with matmul and softmax (not ``nn.MultiheadAttention``) so the ONNX export is plain
    and every LayerNorm is an ``nn.LayerNorm`` that adaptation can find."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
            self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
            self.mlp = nn.Sequential(nn.Linear(DIM, MLP), nn.GELU(), nn.Linear(MLP, DIM))

        def forward(self, x):
            # shapes from the tensors, never Python ints: the export keeps the batch dimension dynamic
            q, k, v = self.qkv(self.norm1(x)).unflatten(-1, (3, HEADS, DIM // HEADS)).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-2, -1) * (DIM // HEADS) ** -0.5, dim=-1)
            x = x + self.proj((attn @ v).transpose(1, 2).flatten(2))
            return x + self.mlp(self.norm2(x))

    class TinyViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(1, DIM, PATCH, stride=PATCH)
            self.cls = nn.Parameter(torch.zeros(1, 1, DIM))
            self.pos = nn.Parameter(torch.randn(1, 1 + (28 // PATCH) ** 2, DIM) * 0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(DEPTH)])
            self.norm = nn.LayerNorm(DIM)
            self.head = nn.Linear(DIM, 10)

        def forward(self, image):
            tokens = self.patch(image).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], 1) + self.pos
            return self.head(self.norm(self.blocks(tokens))[:, 0])

    return TinyViT()


@dataclass
class MnistViT(MnistCnn):
    """mnist-cnn's input, preprocessing and export axes; only the network differs."""

    def torch_module(self):
        import torch

        net = build_network()
        net.load_state_dict(torch.load(WEIGHTS, weights_only=True))
        net.patch_statistics = torch.load(PATCH_STATISTICS, weights_only=True)
        return net.eval()


def patch_statistics() -> dict:
    """Mean and covariance (float64) of the flattened 4x4 input patches of the 4,000 clean training digits, as the
    patch embedding ``patch`` sees them (tasks/refine/sar.py: align_patch_embedding)."""
    import torch

    from helios.models.mnist_cnn import normalize
    from helios.models.mnist_data import load_split

    x_train = torch.from_numpy(normalize(load_split()[0]))
    flat = torch.nn.functional.unfold(x_train, PATCH, stride=PATCH).transpose(1, 2).reshape(-1, PATCH * PATCH).double()
    mean, cov = flat.mean(0), torch.cov(flat.T)
    return {"layer": "patch", "mean": mean, "cov": cov, "items": len(x_train)}


def load_mnist_vit(max_pixels: int = 50_000_000) -> MnistViT:
    import hashlib

    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:16]
    statistics = hashlib.sha256(PATCH_STATISTICS.read_bytes()).hexdigest()[:16]
    return MnistViT(
        name="mnist-vit", modality="image", task="classifier", labels=DIGITS, input_names=("image",),
        recipe={"model": "mnist-vit", "weights_sha256": digest, "patch_statistics_sha256": statistics},
        max_pixels=max_pixels,
    )


if __name__ == "__main__":
    import torch

    torch.save(patch_statistics(), PATCH_STATISTICS)
    print(f"wrote {PATCH_STATISTICS}")
