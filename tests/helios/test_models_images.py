"""Images as users have them: formats, EXIF orientation and pixel modes, through the shared decode."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from helios.models import ModelConfig, load_model
from helios.models.images import open_image


def pattern() -> np.ndarray:
    """An asymmetric 48x64 RGB picture (blocks, so lossy codecs keep it): orientation errors show."""
    arr = np.zeros((48, 64, 3), np.uint8)
    arr[:24, :32] = (220, 30, 30)
    arr[:24, 32:] = (30, 200, 40)
    arr[24:, :16] = (20, 40, 210)
    arr[24:, 16:] = (240, 240, 40)
    return arr


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def decoded(data: bytes, channels: int = 3) -> np.ndarray:
    return np.asarray(open_image(data, channels, 10**8)).astype(np.int64)


@pytest.mark.parametrize("fmt, kwargs, tolerance", [
    ("JPEG", {"quality": 95}, 6), ("PNG", {}, 0), ("WEBP", {"lossless": True}, 0), ("WEBP", {"quality": 90}, 8),
    ("BMP", {}, 0), ("TIFF", {}, 0), ("TIFF", {"compression": "tiff_lzw"}, 0), ("GIF", {}, 0),
])
def test_formats_decode_to_the_same_picture(fmt, kwargs, tolerance):
    img = Image.fromarray(pattern())
    if fmt == "GIF":
        img = img.quantize(colors=8)  # exact for a 4-colour picture
    got = decoded(encode(img, fmt, **kwargs))
    assert got.shape == (48, 64, 3)
    if tolerance:
        assert np.abs(got - pattern()).mean() < tolerance
    else:
        assert (got == pattern()).all()


@pytest.mark.parametrize("orientation, stored", [
    (3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
    (2, Image.Transpose.FLIP_LEFT_RIGHT),
])
def test_exif_orientation_is_applied(orientation, stored):
    """A phone stores the sensor's pixels plus a tag saying how to turn them: the decode turns them upright."""
    raw = Image.fromarray(pattern()).transpose(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation
    got = decoded(encode(raw, "JPEG", quality=95, exif=exif.tobytes()))
    assert got.shape == (48, 64, 3)
    assert np.abs(got - pattern()).mean() < 3  # upright; the stored pixels would differ by ~100


def test_palette_with_transparency_and_alpha_are_composited_on_white():
    rgba = np.dstack([pattern(), np.full((48, 64), 255, np.uint8)])
    rgba[:24, :32, 3] = 0  # top-left block fully transparent
    rgba[24:, 16:, 3] = 128  # yellow block half transparent
    got = decoded(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (got[:24, :32] == 255).all()
    assert np.abs(got[30, 30] - np.array([248, 248, 148])).max() <= 1  # 240*0.5+255*0.5, 40*0.5+255*0.5
    palette = Image.fromarray(pattern()).quantize(colors=4)
    transparent = palette.getpixel((0, 0))
    got = decoded(encode(palette, "PNG", transparency=transparent))
    assert (got[:24, :32] == 255).all() and (got[:24, 32:] == pattern()[:24, 32:]).all()
    la = Image.fromarray(np.dstack([np.full((8, 8), 10, np.uint8), np.zeros((8, 8), np.uint8)]), "LA")
    assert (decoded(encode(la, "PNG"), channels=1) == 255).all()


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.fromarray(pattern()).convert("CMYK")
    got = decoded(encode(cmyk, "JPEG", quality=95))
    assert got.shape == (48, 64, 3)
    assert np.abs(got - pattern()).mean() < 6


def test_16_bit_grey_is_scaled_not_clipped():
    """Pillow's own convert("L") clips 16-bit values at 255: a dark 16-bit photo would come out white."""
    values = np.linspace(0, 255, 48 * 64).reshape(48, 64).round().astype(np.uint16)
    png16 = encode(Image.fromarray(values * 257), "PNG")
    assert Image.open(io.BytesIO(png16)).mode.startswith("I")
    assert (decoded(png16, channels=1) == values).all()
    rgb = decoded(png16, channels=3)
    assert (rgb == values[..., None]).all()
    digit = load_model(ModelConfig(name="mnist-cnn")).preprocess(png16).value  # the built-in model's path too
    assert digit.shape == (1, 28, 28) and 100 < digit.mean() < 155


def test_grey_and_bilevel_go_to_rgb_and_rgb_to_grey():
    grey = Image.fromarray(pattern()).convert("L")
    assert (decoded(encode(grey, "PNG")) == np.asarray(grey)[..., None]).all()
    bilevel = grey.convert("1")
    assert set(np.unique(decoded(encode(bilevel, "PNG")))) <= {0, 255}
    assert decoded(encode(Image.fromarray(pattern()), "PNG"), channels=1).shape == (48, 64)
