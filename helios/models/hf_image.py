"""The preprocessing a Hugging Face image classifier declares in ``preprocessor_config.json``, without transformers.

Reproduces transformers' PIL image processors step for step (resize with Pillow and the declared filter, centre
crop with zero padding, rescale in float64 then float32, normalize in float32), so the arrays are the same as
``AutoImageProcessor``'s (``tests/helios/test_hf_image.py`` checks them on real images of several sizes). The
processors whose image path is the generic one are listed in GENERIC; ConvNeXT's shortest-edge-over-crop_pct
resize is reproduced too. Any other processor is refused with one line naming the supported ones (its own steps
differ: padding, reduced labels, rescale offsets ...), rather than run with steps it did not declare.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from helios.errors import UsageError

# Processors whose image path is PilBackend's resize -> center_crop -> rescale -> normalize (checked against
# transformers in the tests), and ConvNeXT's own resize.
GENERIC = ("ViTImageProcessor", "DeiTImageProcessor", "BitImageProcessor", "CLIPImageProcessor",
           "MobileNetV1ImageProcessor", "PvtImageProcessor", "SiglipImageProcessor")
CONVNEXT = "ConvNextImageProcessor"
KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
        "do_normalize", "image_mean", "image_std", "crop_pct", "do_pad")


def _short_edge_size(height: int, width: int, short: int) -> tuple[int, int]:
    """transformers' get_resize_output_image_size(default_to_square=False): the short side to ``short``."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def _aspect_size(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """transformers' get_size_with_aspect_ratio: the short side to ``size`` unless the long one passes ``max_size``."""
    raw = None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > max_size:
        raw = max_size * lo / hi
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    if width < height:
        return (int(raw * height / width) if raw is not None else int(size * height / width)), size
    return size, (int(raw * width / height) if raw is not None else int(size * width / height))


def center_crop(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' center_crop on (C, H, W): crop, padding with zeros where the image is smaller."""
    _, h, w = arr.shape
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0 and top + height <= h and left + width <= w:
        return arr[:, top:top + height, left:left + width]
    nh, nw = max(height, h), max(width, w)
    out = np.zeros((arr.shape[0], nh, nw), dtype=arr.dtype)
    tp, lp = -(-(nh - h) // 2), -(-(nw - w) // 2)
    out[:, tp:tp + h, lp:lp + w] = arr
    top, left = top + tp, left + lp
    return out[:, max(0, top):min(nh, top + height), max(0, left):min(nw, left + width)]


@dataclass(frozen=True)
class ImageSteps:
    """The resolved steps of one image processor (values as transformers resolves them)."""

    processor: str
    do_resize: bool
    size: dict
    resample: int
    do_center_crop: bool
    crop_size: dict | None
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    crop_pct: float | None = None

    def output_size(self) -> tuple[int, int]:
        """(height, width) of every preprocessed image; UsageError when the processor leaves it to the image."""
        if self.do_center_crop and self.crop_size:
            return int(self.crop_size["height"]), int(self.crop_size["width"])
        if self.do_resize and self.processor == CONVNEXT:
            return int(self.size["shortest_edge"]), int(self.size["shortest_edge"])
        if self.do_resize and "height" in self.size and "width" in self.size:
            return int(self.size["height"]), int(self.size["width"])
        raise UsageError(f"preprocessor_config.json resizes to {self.size} without a crop, so images keep different "
                         "sizes: Helios batches one size; set crop_size and do_center_crop=true, or size to height/width")

    def _resize(self, img):
        height, width = img.height, img.width
        size = self.size
        if self.processor == CONVNEXT:
            short = int(size["shortest_edge"])
            if short >= 384:  # ConvNeXT warps at 384 and above, and crops below
                return np.asarray(img.resize((short, short), resample=self.resample)).copy(), None
            h, w = _short_edge_size(height, width, int(short / self.crop_pct))
            return np.asarray(img.resize((w, h), resample=self.resample)).copy(), (short, short)
        if "shortest_edge" in size and "longest_edge" in size:
            h, w = _aspect_size(height, width, int(size["shortest_edge"]), int(size["longest_edge"]))
        elif "shortest_edge" in size:
            h, w = _short_edge_size(height, width, int(size["shortest_edge"]))
        elif "height" in size and "width" in size:
            h, w = int(size["height"]), int(size["width"])
        else:
            raise UsageError(f"preprocessor_config.json size {size} is not supported: use height/width or shortest_edge")
        return np.asarray(img.resize((w, h), resample=self.resample)).copy(), None

    def apply(self, img) -> np.ndarray:
        """A PIL image in the model's mode -> float32 (C, H, W), as the transformers processor returns it."""
        crop = None
        if self.do_resize:
            arr, crop = self._resize(img)
        else:
            arr = np.asarray(img).copy()
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if crop is not None:
            arr = center_crop(arr, *crop)
        if self.do_center_crop and self.crop_size:
            arr = center_crop(arr, int(self.crop_size["height"]), int(self.crop_size["width"]))
        if self.do_rescale:
            arr = (arr.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            if not np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(np.float32)
            mean = np.asarray(self.image_mean, dtype=arr.dtype)[:, None, None]
            std = np.asarray(self.image_std, dtype=arr.dtype)[:, None, None]
            arr = (arr - mean) / std
        return np.ascontiguousarray(arr, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The resolved steps (the model's recipe carries them)."""
        from dataclasses import asdict

        return asdict(self)


def _per_channel(value, channels: int) -> tuple[float, ...]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * channels
    return tuple(float(v) for v in values)


def _resolved(model_dir: Path, raw: dict) -> dict:
    """The processor's settings with class defaults filled in: from the file when it names them all (as
    ``save_pretrained`` writes it), else from transformers' own processor class."""
    if all(k in raw for k in KEYS if k not in ("crop_pct", "do_pad", "crop_size", "do_center_crop")):
        return raw
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(str(model_dir), local_files_only=True)
    return {**proc.to_dict(), **raw}


def _size_dict(value, default_to_square: bool) -> dict:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    if isinstance(value, int):
        return {"height": value, "width": value} if default_to_square else {"shortest_edge": value}
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return {"height": value[0], "width": value[1]}
    raise UsageError(f"preprocessor_config.json size {value!r} is not supported: use {{'height': H, 'width': W}} "
                     "or {'shortest_edge': S}")


def read_steps(model_dir: Path, channels: int) -> ImageSteps:
    """``model_dir/preprocessor_config.json`` -> ImageSteps; UsageError naming the file when it cannot be used."""
    path = model_dir / "preprocessor_config.json"
    if not path.is_file():
        raise UsageError(f"{model_dir} has no preprocessor_config.json: save the image processor with the model "
                         "(processor.save_pretrained(dir)) so Helios preprocesses images the way the model was trained")
    raw = json.loads(path.read_text(encoding="utf-8"))
    processor = str(raw.get("image_processor_type", "")).removesuffix("Fast").removesuffix("Pil")
    if processor not in GENERIC + (CONVNEXT,):
        raise UsageError(f"{path} declares image_processor_type={processor or None!r}, whose preprocessing Helios does "
                         f"not reproduce: supported are {', '.join(GENERIC + (CONVNEXT,))}")
    if raw.get("do_pad"):
        raise UsageError(f"{path} sets do_pad=true: Helios supports processors that resize and crop, not pad")
    res = _resolved(model_dir, raw)
    crop = _size_dict(res["crop_size"], True) if res.get("crop_size") is not None else None
    return ImageSteps(
        processor=processor, do_resize=bool(res["do_resize"]),
        size=_size_dict(res["size"], processor not in ("CLIPImageProcessor", "BitImageProcessor", CONVNEXT)),
        resample=int(res["resample"] if res["resample"] is not None else 2),
        do_center_crop=bool(res.get("do_center_crop")), crop_size=crop, do_rescale=bool(res["do_rescale"]),
        rescale_factor=float(res["rescale_factor"]), do_normalize=bool(res["do_normalize"]),
        image_mean=_per_channel(res["image_mean"], channels), image_std=_per_channel(res["image_std"], channels),
        crop_pct=float(res.get("crop_pct") or 224 / 256) if processor == CONVNEXT else None,
    )
