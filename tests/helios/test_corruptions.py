import numpy as np
import pytest

from helios.data.corruptions import CORRUPTIONS, DEV_CORRUPTIONS, apply_corruption

MNIST_C = ["shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
           "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges"]


@pytest.fixture(scope="module")
def digits():
    """Eight synthetic 'digits': bright strokes on black, off-centre so geometric corruptions visibly move them."""
    rng = np.random.default_rng(0)
    images = np.zeros((8, 28, 28), dtype=np.uint8)
    for k in range(8):
        r, c = 8 + k, 10 + (k % 3)
        images[k, r:r + 10, c:c + 3] = 255
        images[k, r:r + 3, c:c + 8] = rng.integers(180, 256)
    return images


def test_the_mnist_c_list_is_complete_and_dev_corruptions_are_separate():
    assert sorted(CORRUPTIONS) == sorted(MNIST_C)
    assert not set(CORRUPTIONS) & set(DEV_CORRUPTIONS)


@pytest.mark.parametrize("name", MNIST_C + sorted(DEV_CORRUPTIONS))
def test_shape_dtype_and_seed_determinism(name, digits):
    a = apply_corruption(name, digits, np.random.default_rng(3))
    b = apply_corruption(name, digits, np.random.default_rng(3))
    assert a.shape == digits.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, digits) or name in ("quantize",)  # quantize leaves pure black/white strokes alone


def test_stripe_inverts_the_outer_columns_and_is_an_involution(digits):
    once = apply_corruption("stripe", digits, np.random.default_rng(0))
    assert (once[:, :, :7] == 255 - digits[:, :, :7]).all() and (once[:, :, 7:21] == digits[:, :, 7:21]).all()
    np.testing.assert_array_equal(apply_corruption("stripe", once, np.random.default_rng(0)), digits)


def test_brightness_adds_half_the_range(digits):
    out = apply_corruption("brightness", digits, np.random.default_rng(0))
    assert out[digits == 0].min() == 127 and out[digits == 255].min() == 255


def test_translate_moves_the_digit_three_pixels_on_both_axes(digits):
    out = apply_corruption("translate", digits, np.random.default_rng(0))
    for before, after in zip(digits, out):
        (r0, c0), (r1, c1) = np.argwhere(before > 0).min(0), np.argwhere(after > 0).min(0)
        assert abs(r1 - r0) == 3 and abs(c1 - c0) == 3


def test_scale_shrinks_about_the_centre(digits):
    out = apply_corruption("scale", digits, np.random.default_rng(0))
    assert (out > 0).sum() < 0.7 * (digits > 0).sum()


def test_canny_gives_binary_edges_only_around_strokes(digits):
    out = apply_corruption("canny_edges", digits, np.random.default_rng(0))
    assert set(np.unique(out)) <= {0, 255} and (out == 255).any()
    assert (out[:, :3, :] == 0).all()  # the top rows are empty in every input


def test_unknown_corruption_names_the_valid_ones(digits):
    with pytest.raises(ValueError, match="shot_noise"):
        apply_corruption("snow_storm", digits, np.random.default_rng(0))
