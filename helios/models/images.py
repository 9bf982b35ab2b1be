"""Image decoding shared by every image model: bytes as users have them -> a PIL image the model can take.

JPEG, PNG, WebP, BMP, TIFF, GIF (first frame) ... whatever Pillow reads. The EXIF orientation is applied (phones
store portrait photos as landscape pixels plus a rotation tag). Modes are converted the way the models expect:
transparency (RGBA, LA, palette with a transparent index) is composited onto white, as transformers' image
processors do; 16-bit and 32-bit grey are scaled to 8 bits (Pillow's own ``convert("L")`` clips them, turning most
16-bit photos white); CMYK, palette, bilevel and YCbCr go through Pillow's conversion.
"""
from __future__ import annotations

import io

import numpy as np

from helios.models.base import InputError

_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _scaled_grey(img):
    """16/32-bit integer or float grey -> 8-bit grey, scaled rather than clipped."""
    from PIL import Image

    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        peak = 1.0 if np.nanmax(arr, initial=0.0) <= 1.0 else 255.0  # float images are [0, 1] or [0, 255]
        arr = np.clip(np.nan_to_num(arr) / peak * 255.0, 0, 255)
    else:
        arr = np.clip(arr.astype(np.int64), 0, 65535) / 257.0  # 65535 -> 255, as 16-bit decoders scale
    return Image.fromarray(np.rint(arr).astype(np.uint8), mode="L")


def _flatten_alpha(img):
    """Composite transparency onto white (transformers' ``convert_to_rgb`` does the same)."""
    from PIL import Image

    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_mode(img, channels: int):
    """``img`` as "L" (1 channel) or "RGB" (3 channels)."""
    target = "L" if channels == 1 else "RGB"
    if img.mode in _WIDE_GREY or img.mode == "F":
        img = _scaled_grey(img)
    elif "A" in img.getbands() or img.info.get("transparency") is not None:
        img = _flatten_alpha(img)
    return img if img.mode == target else img.convert(target)


def open_image(data: bytes, channels: int, max_pixels: int):
    """Decode ``data`` to an upright PIL image in "L" or "RGB"; raise InputError with a readable reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise InputError("empty file: zero bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise InputError(f"decompression bomb: {img.width}x{img.height} pixels exceeds "
                                 f"model.max_image_pixels={max_pixels}")
            img.load()
            upright = ImageOps.exif_transpose(img) or img
            return to_mode(upright, channels)
    except InputError:
        raise
    except UnidentifiedImageError as exc:
        raise InputError("not an image: the content is not a format Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise InputError(f"decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"corrupt image: {exc}") from exc


def decode_image(data: bytes, size: tuple[int, int], channels: int, max_pixels: int) -> np.ndarray:
    """Decode image bytes to uint8 (C, H, W) at ``size`` (height, width); raise InputError with a readable reason."""
    img = open_image(data, channels, max_pixels)
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
