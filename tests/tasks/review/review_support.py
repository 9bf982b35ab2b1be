"""Constants and small builders shared by the review tests (a plain module: conftest is not importable by name)."""
from __future__ import annotations

import io

from PIL import Image

LABELS = ("cat", "dog", "bird")
PRICES = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}
# 1000 prompt and 100 completion tokens per answer (the fake's usage) at $3 / $15 per million tokens
COST_PER_REQUEST = 1000 * 3.0 / 1e6 + 100 * 15.0 / 1e6
SECRET = "sk-or-v1-HELIOS-TEST-5eCr3t-0123456789abcdef"


def png_bytes(value: int = 128) -> bytes:
    """A 28x28 grey PNG."""
    buffer = io.BytesIO()
    Image.new("L", (28, 28), value).save(buffer, "PNG")
    return buffer.getvalue()
