"""Helios's reproduction of transformers' image processors, against AutoImageProcessor on real photos of several
sizes (scikit-learn's two sample JPEGs, cropped and scaled), and the processor list kept honest."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helios.errors import UsageError
from helios.models.hf_image import CONVNEXT, GENERIC, read_steps
from helios.models.images import open_image

# (image_processor_type, settings as save_pretrained writes them)
STD = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
       "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
CLIP = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
PROCESSORS = {
    "vit-224": ("ViTImageProcessor", {**STD, "size": {"height": 224, "width": 224}, "resample": 2}),
    "convnext-224": (CONVNEXT, {**STD, "size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3}),
    "convnext-384": (CONVNEXT, {**STD, "size": {"shortest_edge": 384}, "crop_pct": 0.875, "resample": 3}),
    "clip-crop": ("CLIPImageProcessor", {**STD, **CLIP, "size": {"shortest_edge": 224}, "resample": 3,
                                         "do_center_crop": True, "crop_size": {"height": 224, "width": 224}}),
    "deit-256-crop": ("DeiTImageProcessor", {**STD, "size": {"height": 256, "width": 256}, "resample": 3,
                                             "do_center_crop": True, "crop_size": {"height": 224, "width": 224}}),
    "bit-aspect": ("BitImageProcessor", {**STD, "size": {"shortest_edge": 160, "longest_edge": 200}, "resample": 2,
                                         "do_center_crop": True, "crop_size": {"height": 150, "width": 150}}),
}


def photos() -> list[Image.Image]:
    """Real photos at several sizes: full, portrait, wide strip, small (padded by the crop), tiny, square."""
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    return [china, flower.transpose(Image.Transpose.ROTATE_90), china.crop((0, 100, 600, 220)),
            flower.resize((120, 90)), china.resize((17, 23)), flower.crop((100, 0, 527, 427))]


def jpeg(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92, **kwargs)
    return buf.getvalue()


def processor_dir(tmp_path: Path, kind: str, settings: dict) -> Path:
    d = tmp_path / kind
    d.mkdir()
    (d / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": kind, **settings}))
    return d


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_preprocessing_equals_transformers_on_real_photos(tmp_path, name):
    from transformers import AutoImageProcessor

    kind, settings = PROCESSORS[name]
    d = processor_dir(tmp_path, kind, settings)
    steps = read_steps(d, 3)
    reference = AutoImageProcessor.from_pretrained(str(d))
    assert reference.backend == "pil"  # the reference processor (transformers' own PIL path)
    sizes = set()
    for photo in photos():
        data = jpeg(photo)
        ours = steps.apply(open_image(data, 3, 10**9))
        theirs = reference(images=Image.open(io.BytesIO(data)).convert("RGB"), return_tensors="np")["pixel_values"][0]
        assert ours.dtype == np.float32 and ours.shape == theirs.shape == (3, *steps.output_size())
        np.testing.assert_array_equal(ours, theirs)
        sizes.add(photo.size)
    assert len(sizes) == 6


def test_missing_settings_come_from_the_processor_class(tmp_path):
    from transformers import AutoImageProcessor

    d = processor_dir(tmp_path, "CLIPImageProcessor", {})  # every value from CLIPImageProcessor's defaults
    steps = read_steps(d, 3)
    assert steps.output_size() == (224, 224) and steps.resample == 3
    data = jpeg(photos()[1])
    theirs = AutoImageProcessor.from_pretrained(str(d))(images=Image.open(io.BytesIO(data)).convert("RGB"),
                                                        return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(steps.apply(open_image(data, 3, 10**9)), theirs)


def test_generic_processors_use_transformers_generic_path():
    """Every processor Helios treats as generic overrides none of the steps in transformers (else it is not)."""
    import importlib

    from transformers.image_processing_backends import PilBackend

    steps = ("_preprocess", "resize", "center_crop", "rescale", "normalize", "process_image", "preprocess")
    modules = {"ViT": "vit", "DeiT": "deit", "Bit": "bit", "CLIP": "clip", "MobileNetV1": "mobilenet_v1",
               "Pvt": "pvt", "Siglip": "siglip"}
    for kind in GENERIC:
        prefix = kind.removesuffix("ImageProcessor")
        module = importlib.import_module(f"transformers.models.{modules[prefix]}.image_processing_pil_{modules[prefix]}")
        cls = getattr(module, f"{kind}Pil")
        assert issubclass(cls, PilBackend) and not [s for s in steps if s in cls.__dict__], kind


@pytest.mark.parametrize("kind, settings, message", [
    ("BeitImageProcessor", STD, "image_processor_type='BeitImageProcessor'.*supported are ViTImageProcessor"),
    ("ViTImageProcessor", {**STD, "size": {"shortest_edge": 224}, "resample": 2}, "without a crop"),
    ("ViTImageProcessor", {**STD, "size": {"height": 8, "width": 8}, "resample": 2, "do_pad": True}, "do_pad"),
])
def test_unusable_processors_are_one_line_errors(tmp_path, kind, settings, message):
    d = processor_dir(tmp_path, kind, settings)
    with pytest.raises(UsageError, match=message):
        read_steps(d, 3).output_size()


def test_missing_preprocessor_config_names_the_fix(tmp_path):
    with pytest.raises(UsageError, match="no preprocessor_config.json.*save_pretrained"):
        read_steps(tmp_path, 3)
