"""Real tiny components for the infer stage: the built-in models exported to ONNX once per session, real PNGs."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from helios.models.config import ModelConfig
from helios.models import load_model
from tasks.infer.model_ref import make_model_ref
from tasks.prepare.export import export_onnx


@pytest.fixture(scope="session")
def mnist_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist-onnx")
    path = export_onnx(load_model(ModelConfig(name="mnist-cnn")), out, 17)
    return make_model_ref(ModelConfig(name="mnist-cnn", max_image_pixels=1_000_000), path, intra_op_threads=1)


@pytest.fixture(scope="session")
def minilm_ref(minilm_export):
    return make_model_ref(ModelConfig(name="minilm"), minilm_export, intra_op_threads=1)  # tests/conftest.py's export


def png_bytes(seed: int) -> bytes:
    """A real 28x28 grayscale PNG (a noisy blob, enough for the model to run on)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 10:18] = rng.integers(128, 256, size=(16, 8))
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge image: a decompression bomb if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def write_digits(root: Path, n: int, prefix: str = "d") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"{prefix}{i:04d}.png"
        p.write_bytes(png_bytes(i))
        paths.append(p)
    return paths


@pytest.fixture
def make_png():
    return png_bytes


@pytest.fixture
def make_bomb():
    return bomb_png


@pytest.fixture
def make_digits():
    return write_digits
