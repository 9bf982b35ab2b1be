"""What the review's traces keep of an item: images only when asked to (tracking.trace_images)."""
from __future__ import annotations

import io

import dspy
from PIL import Image

from flows.review_traces import IMAGE_NOTE, ReviewTracer
from tasks.review.core import ReviewedItem, ReviewItem


def reviewed_image(tmp_path) -> ReviewedItem:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 90).save(buffer, "PNG")
    inputs = {"allowed_labels": ["3", "8"], "model_label": "3", "image": dspy.Image(buffer.getvalue())}
    return ReviewedItem(ReviewItem("a/3.png", tmp_path / "a/3.png", "3", 0.41), inputs, result=None)


def test_images_are_left_out_of_traces_by_default(tmp_path):
    kept = ReviewTracer("1", "run", keep_images=False).trace_inputs(reviewed_image(tmp_path))
    assert kept == {"item": "a/3.png", "confidence": 0.41, "allowed_labels": ["3", "8"], "model_label": "3",
                    "image": IMAGE_NOTE}


def test_images_are_kept_as_data_uris_when_asked(tmp_path):
    kept = ReviewTracer("1", "run", keep_images=True).trace_inputs(reviewed_image(tmp_path))
    assert kept["image"].startswith("data:image/png;base64,")
