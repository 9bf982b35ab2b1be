"""Sets that mix clean and shifted digits: found by their BN statistics, refined as two sets; one-distribution sets
are never split. Real mnist-cnn, real corruptions, the stage's own code."""
import numpy as np
import pytest
import torch

from helios.data.corruptions import apply_corruption
from helios.models.mnist_cnn import normalize
from helios.models.mnist_data import load_split
from helios.models.base import softmax
from tasks.refine.config import RefineConfig
from tasks.refine.context import RefineContext
from tasks.refine.work import refine_arrays
from tasks.refine.domains import shifted_group
from tasks.session import open_session

N = 400


@pytest.fixture(scope="module")
def digits():
    _, _, x, y = load_split()
    return x[:N], y[:N]


def corrupt(images, name):
    return apply_corruption(name, images, np.random.default_rng(0))


def half_and_half(digits, name):
    x, y = digits
    half = len(x) // 2
    return np.concatenate([x[:half], corrupt(x[half:], name)]), y, np.arange(len(x)) >= half


@pytest.mark.parametrize("name", ["fog", "brightness", "impulse_noise"])
def test_a_strong_shift_mixed_with_clean_digits_is_found(mnist_onnx, digits, name):
    adapter, _ = mnist_onnx
    images, _, truly_shifted = half_and_half(digits, name)
    mask, facts = shifted_group(adapter.torch_module(), torch.from_numpy(normalize(images)), 128, 0.05)
    assert facts["split"] and (mask == truly_shifted).mean() >= 0.98, facts


@pytest.mark.parametrize("name", ["clean", "fog", "rotate", "scale", "motion_blur", "shot_noise"])
def test_a_set_of_one_distribution_is_never_split(mnist_onnx, digits, name):
    adapter, _ = mnist_onnx
    images = digits[0] if name == "clean" else corrupt(digits[0], name)
    mask, facts = shifted_group(adapter.torch_module(), torch.from_numpy(normalize(images)), 128, 0.05)
    assert mask is None and not facts["split"], facts


def test_clean_digits_keep_their_answers_while_the_fog_half_adapts(mnist_onnx, digits, tmp_path):
    adapter, onnx_path = mnist_onnx
    images, y, fog = half_and_half(digits, "fog")
    x = normalize(images)
    probs = softmax(open_session(onnx_path).run({"image": x})[0].astype(np.float64))
    label, conf = probs.argmax(1), probs.max(1)
    ctx = RefineContext(RefineConfig(), adapter, onnx_path, tmp_path, ("CPUExecutionProvider",), 2)
    out = refine_arrays(ctx, x, label, conf, y)

    def error(labels, part):
        return float((labels[part] != y[part]).mean())

    assert error(out.label, ~fog) <= error(label, ~fog) + 0.005  # before: 1 % -> 15 % on the same digits
    assert error(out.label, fog) <= error(label, fog) - 0.3  # fog: 87 % -> about 37 %
    mixture = out.summary["mixture"]
    assert mixture["split"] and mixture["groups"]["shifted"]["items"] == fog.sum()
    assert mixture["groups"]["like-source"]["status"] == "done" and any("mixed set" in n for n in out.summary["notes"])
    assert out.summary["accuracy_after"] == pytest.approx(1 - error(out.label, slice(None)), abs=1e-4)
    assert mixture["forward_passes"] == N and "mixture-check" not in out.summary["methods"]
    assert out.summary["methods"]["bn-adapt"]["touched"] == fog.sum()  # the clean half was not re-inferred
    assert set(out.method[~fog]) <= {"", "tta"}
