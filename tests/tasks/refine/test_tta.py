import numpy as np
import pytest

from helios.models.base import softmax
from tasks.refine import tta
from tasks.session import open_session


def test_identity_view_is_always_first_and_unique():
    for name in tta.IMAGE_POLICIES:
        policy = tta.build_policy(name, "mean", "image")
        assert policy.views[0].name == "identity"
        assert [v.name for v in policy.views].count("identity") == 1


@pytest.mark.parametrize("name,merge,modality,match", [
    ("standard", "median", "image", "tta_merge='median'.*mean, gmean, max, tsharpen"),
    ("huge", "mean", "image", "tta_policy='huge'.*light, standard, wide"),
    ("standard", "mean", "text", "no text TTA policy"),
])
def test_policy_is_validated_when_built(name, merge, modality, match):
    with pytest.raises(tta.PolicyError, match=match):
        tta.build_policy(name, merge, modality)


def test_shifts_undo_each_other_away_from_the_border():
    x = np.random.default_rng(0).normal(size=(3, 1, 12, 12)).astype(np.float32)
    back = tta.shift(-1, 2)(tta.shift(1, -2)(x))
    np.testing.assert_array_equal(back[:, :, 2:-2, 3:-3], x[:, :, 2:-2, 3:-3])


def test_affine_without_change_is_identity_and_rotation_keeps_shape():
    x = np.random.default_rng(1).normal(size=(2, 1, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(tta.affine()(x), x, atol=1e-6)
    rotated = tta.affine(degrees=90)(x)
    np.testing.assert_allclose(rotated[0, 0], np.rot90(x[0, 0]), atol=1e-5)  # square image: exact quarter turn


@pytest.mark.parametrize("mode", tta.MERGE_MODES)
def test_merge_modes_give_distributions_and_agree_on_identical_views(mode):
    p = softmax(np.random.default_rng(2).normal(size=(5, 10)))
    merged = tta.merge_views(np.stack([p, p, p]), mode)
    np.testing.assert_allclose(merged.sum(1), 1.0)
    np.testing.assert_array_equal(merged.argmax(1), p.argmax(1))
    if mode in ("mean", "gmean", "max"):
        np.testing.assert_allclose(merged, p, atol=1e-9)


def test_all_views_of_a_batch_go_in_one_onnx_runtime_call(mnist_onnx):
    adapter, onnx_path = mnist_onnx
    session = open_session(onnx_path)
    calls = []

    def run(feeds):
        calls.append(feeds["image"].shape[0])
        return session.run(feeds)

    policy = tta.build_policy("standard", "mean", "image")
    x = np.random.default_rng(0).normal(size=(20, 1, 28, 28)).astype(np.float32)
    probs = tta.predict_tta(run, "image", x, policy, batch_size=8)
    assert calls == [8 * policy.size, 8 * policy.size, 4 * policy.size]
    assert probs.shape == (20, 10)
    single = tta.build_policy("standard", "mean", "image")
    identity_only = tta.Policy("identity", single.views[:1], "mean")
    np.testing.assert_allclose(tta.predict_tta(session.run, "image", x, identity_only),
                               softmax(session.run({"image": x})[0].astype(np.float64)), atol=1e-6)
