"""The routed graph of a mixed set (probe + split rule + the groups' models in one ONNX file): its features are the
mixture check's, its groups are the splitter's, each item's logits are its own group's model's. Real mnist-cnn, real ONNX Runtime."""
import copy

import numpy as np
import torch

from helios.data.corruptions import apply_corruption
from helios.models.mnist_cnn import normalize
from helios.models.mnist_data import load_split
from tasks.refine import bn_adapt, domains
from tasks.refine.config import RefineConfig
from tasks.refine.context import RefineContext
from tasks.refine.probe import export_probe, probe_session
from tasks.refine.routed import Routed, export_routed
from tasks.session import open_session


def mixed_batch(n=256):
    _, _, x, _ = load_split()
    images = np.concatenate([x[:n // 2], apply_corruption("fog", x[n // 2:n], np.random.default_rng(0))])
    return normalize(images)


def test_the_probe_graph_gives_the_mixture_checks_features(mnist_onnx, tmp_path):
    adapter, onnx_path = mnist_onnx
    module, x = adapter.torch_module(), mixed_batch()
    features = probe_session(export_probe(module, domains.LAYERS, x[:2], tmp_path, 17), 1)(x)
    moments = domains.item_moments(module, torch.from_numpy(x), 64)
    want = domains._features(moments[:domains.LAYERS], bn_adapt.snapshot_statistics(module)[:domains.LAYERS])
    np.testing.assert_allclose(features, want, rtol=1e-3, atol=1e-4)


def test_the_routed_graph_places_items_as_the_splitter_and_answers_with_each_model(mnist_onnx, tmp_path):
    adapter, onnx_path = mnist_onnx
    source, x = adapter.torch_module(), mixed_batch()
    shifted, _, splitter = domains.find_groups(source, torch.from_numpy(x), 64, 0.05)
    assert splitter is not None and shifted[128:].mean() > 0.95 and shifted[:128].mean() < 0.05
    other = copy.deepcopy(source)  # a second "adapted" model: BN statistics of the fog half
    bn_adapt.adapt_statistics(other, [torch.from_numpy(x[128:])], 16.0)
    ctx = RefineContext(RefineConfig(), adapter, onnx_path, tmp_path, ("CPUExecutionProvider",), 1)
    path = export_routed(ctx, Routed(source, splitter, [source, other], [False, True]), x, tmp_path / "routed",
                         {"test": 1})
    assert path is not None
    logits, embeddings = open_session(path, ("CPUExecutionProvider",), 1).run({"image": x})
    flag = embeddings[:, 0] > 0.5
    expected = splitter.shifted(probe_session(export_probe(source, domains.LAYERS, x[:2], tmp_path, 17), 1)(x))
    assert (flag == expected).all()
    with torch.no_grad():
        own, adapted = source.eval()(torch.from_numpy(x)).numpy(), other.eval()(torch.from_numpy(x)).numpy()
    assert np.abs(own - adapted).max() > 0.5  # two different models: which one answered shows
    np.testing.assert_allclose(logits, np.where(flag[:, None], adapted, own), atol=1e-3)
    np.testing.assert_array_equal(embeddings[:, 1:], logits)
    for half, model in ((x[:100], source), (x[160:], other)):  # one group only: the other model gets no rows
        assert (flag[:100] == False).all() and (flag[160:] == True).all()  # noqa: E712
        got = open_session(path, ("CPUExecutionProvider",), 1).run({"image": half})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, model(torch.from_numpy(half)).numpy(), atol=1e-3)
    # kept for the same models and split: the file is reused as it is, not exported again
    assert export_routed(ctx, None, x, tmp_path / "routed", {"test": 1}) == path
