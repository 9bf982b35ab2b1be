"""Hugging Face directories: dispatch on architectures, the model's own head and labels, quiet loading."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # tests have no packages (importlib mode): make helpers importable

from hf_dirs import ANIMALS, TOPICS, resnet_dir, text_classifier_dir, vit_dir  # noqa: E402

from helios.errors import UsageError  # noqa: E402
from helios.models import ModelConfig, load_model  # noqa: E402
from helios.models.hf import HfImageClassifier, HfTextClassifier  # noqa: E402
from helios.models.minilm import SentenceModel  # noqa: E402

TEXTS = [b"The striker scored twice and the team won the championship final.",
         b"Shares fell after the company missed quarterly earnings estimates.",
         b"Researchers published a study on the new telescope.", b"short"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"text": text_classifier_dir(root / "bert-topics"), "vit": vit_dir(root / "vit-animals"),
            "resnet": resnet_dir(root / "resnet-animals")}


def test_text_classifier_uses_its_own_head_labels_and_tokenizer(dirs):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    adapter = load_model(ModelConfig(name=str(dirs["text"])))
    assert isinstance(adapter, HfTextClassifier) and adapter.task == "classifier" and adapter.modality == "text"
    assert adapter.labels == TOPICS and adapter.output_names == ("logits", "embeddings") and adapter.max_length == 512
    feeds = adapter.collate([adapter.preprocess(t) for t in TEXTS])
    tok = AutoTokenizer.from_pretrained(str(dirs["text"]))
    ref = tok([t.decode() for t in TEXTS], padding=True, return_tensors="pt")
    assert (feeds["input_ids"] == ref["input_ids"].numpy()).all()
    own = AutoModelForSequenceClassification.from_pretrained(str(dirs["text"])).eval()
    with torch.no_grad():
        expected = own(**ref).logits.numpy()
        got = adapter.torch_module()(*(torch.from_numpy(feeds[n]) for n in adapter.input_names)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_image_classifier_matches_the_model_on_its_processor_output(dirs, kind):
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    adapter = load_model(ModelConfig(name=str(dirs[kind])))
    assert isinstance(adapter, HfImageClassifier) and adapter.labels == ANIMALS and adapter.input_names == ("pixel_values",)
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 60), (90, 33), (32, 32))]
    data = []
    for p in pictures:
        buf = io.BytesIO()
        p.save(buf, format="PNG")
        data.append(buf.getvalue())
    feeds = adapter.collate([adapter.preprocess(d) for d in data])
    assert feeds["pixel_values"].shape == (3, 3, 32, 32)
    pixels = AutoImageProcessor.from_pretrained(str(dirs[kind]))(images=pictures, return_tensors="pt")["pixel_values"]
    model = AutoModelForImageClassification.from_pretrained(str(dirs[kind])).eval()
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits.numpy()
        got = adapter.torch_module()(torch.from_numpy(feeds["pixel_values"])).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["text", "vit"])
def test_classifiers_export_what_their_head_sees_as_embeddings(dirs, tmp_path, kind):
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    from tasks.prepare.export import export_onnx

    adapter = load_model(ModelConfig(name=str(dirs[kind])))
    assert adapter.output_names == ("logits", "embeddings") and adapter.recipe["outputs"] == ["logits", "embeddings"]
    if kind == "text":
        feeds = adapter.collate([adapter.preprocess(t) for t in TEXTS])
    else:
        feeds = {"pixel_values": np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)}
    session = ort.InferenceSession(str(export_onnx(adapter, tmp_path, 17)), providers=["CPUExecutionProvider"])
    logits, embeddings = session.run(["logits", "embeddings"], feeds)
    auto = AutoModelForSequenceClassification if kind == "text" else AutoModelForImageClassification
    own = auto.from_pretrained(str(dirs[kind])).eval()
    tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        if kind == "text":  # BERT's head: dropout, then the classifier Linear on the pooler output
            pooled = own.bert(**tensors).pooler_output
        else:  # ViT's head: the classifier Linear on the CLS token of the layernormed last hidden state
            pooled = own.vit(**tensors).last_hidden_state[:, 0]
        expected, headed = own(**tensors).logits, own.classifier(pooled)
        eager = adapter.torch_module()(*tensors.values())
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(logits), own.config.hidden_size)
    np.testing.assert_allclose(embeddings, pooled.numpy(), atol=1e-4)
    np.testing.assert_allclose(headed.numpy(), expected.numpy(), atol=1e-5)  # pooled is what the head sees
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)
    assert isinstance(eager, torch.Tensor)  # refine and parity call the module eagerly: logits alone


def test_a_head_without_a_final_linear_of_the_labels_width_is_refused(dirs):
    import torch
    from transformers import AutoModelForSequenceClassification

    from helios.models.hf import classifier_module

    model = AutoModelForSequenceClassification.from_pretrained(str(dirs["text"])).eval()
    model.classifier = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Softmax(-1))
    with pytest.raises(UsageError, match=r"does not end in an nn.Linear of its 4 labels' width"):
        classifier_module(model, dirs["text"])


def test_labels_override_and_width_mismatch(dirs):
    adapter = load_model(ModelConfig(name=str(dirs["vit"]), labels=("a", "b", "c")))
    assert adapter.labels == ("a", "b", "c")
    with pytest.raises(UsageError, match="model.labels has 2 labels but the head .* has 3 outputs: give 3 labels"):
        load_model(ModelConfig(name=str(dirs["vit"]), labels=("a", "b")))


def test_encoder_without_head_is_the_zero_shot_embedder(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "enc")
    from hf_dirs import copy_minilm_tokenizer

    copy_minilm_tokenizer(tmp_path / "enc")
    adapter = load_model(ModelConfig(name=str(tmp_path / "enc")))
    assert isinstance(adapter, SentenceModel) and adapter.task == "embedder"


def test_other_architectures_exit_2_naming_what_is_supported(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(tmp_path / "mlm")
    with pytest.raises(UsageError, match=r"\['BertForMaskedLM'\].*ForSequenceClassification.*ForImageClassification"
                                         r".*encoder without a head") as info:
        load_model(ModelConfig(name=str(tmp_path / "mlm")))
    assert "\n" not in str(info.value)


def _rewrite_weights(src: Path, dst: Path, change) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_loading_prints_nothing_and_a_mismatch_is_one_line_or_an_error(dirs, tmp_path, capfd, caplog):
    caplog.set_level("INFO")
    for _ in range(2):  # prepare and optimize each build the module: still nothing
        for kind in ("text", "vit", "resnet"):
            load_model(ModelConfig(name=str(dirs[kind]))).torch_module()
    out, err = capfd.readouterr()
    assert out == "" and err == "" and not [r for r in caplog.records if r.levelno >= 30]

    extra = _rewrite_weights(dirs["text"], tmp_path / "extra", lambda t: t.update({"pooler.extra.weight": t["classifier.bias"].clone()}))
    for _ in range(2):
        load_model(ModelConfig(name=str(extra))).torch_module()
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # pytest holds the log records; a plain run prints them on stderr
    lines = [r.getMessage() for r in caplog.records if r.levelno >= 30]
    assert len(lines) == 1 and "1 weight(s) in the directory are not used" in lines[0] and "\n" not in lines[0]
    assert "pooler.extra.weight" in lines[0]

    headless = _rewrite_weights(dirs["text"], tmp_path / "headless",
                                lambda t: [t.pop(k) for k in ("classifier.weight", "classifier.bias")])
    with pytest.raises(UsageError, match="lacks weights for classifier.bias, classifier.weight: they would be random"):
        load_model(ModelConfig(name=str(headless))).torch_module()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_text_classifier_without_tokenizer_names_the_fix(dirs, tmp_path):
    import shutil

    d = tmp_path / "no-tok"
    shutil.copytree(dirs["text"], d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(UsageError, match="no tokenizer.json"):
        load_model(ModelConfig(name=str(d)))
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("id2label"), cfg.pop("label2id")
    cfg["num_labels"] = 0
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="no id2label or num_labels"):
        load_model(ModelConfig(name=str(d)))


def test_a_default_binary_head_saved_without_id2label_gets_transformers_labels():
    """transformers 5 writes neither id2label nor num_labels for its default two-label head, and reads such a
    config back as LABEL_0 and LABEL_1: Helios does the same (it refused the model before)."""
    from transformers import BertConfig

    from helios.models.hf import class_labels

    config = BertConfig(num_hidden_layers=1).to_diff_dict()
    assert "id2label" not in config and "num_labels" not in config
    assert class_labels(config, None, Path("m")) == ("LABEL_0", "LABEL_1")
    assert class_labels(config, ["negative", "positive"], Path("m")) == ("negative", "positive")
