"""Real tiny models for the optimize tests: the built-in mnist-cnn on real digits, and a 2-layer BERT."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hardware import cpu_profile, recommend


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> tuple[list[Path], dict[str, str]]:
    """96 real MNIST digits as PNG files, and their labels keyed by relative path."""
    import csv

    from helios.data.demo import write_demo

    root = tmp_path_factory.mktemp("digits")
    labels = write_demo("mnist", 96, root)
    with labels.open(newline="") as fh:
        truth = {row["path"]: row["label"] for row in csv.DictReader(fh)}
    return sorted((root / "files").rglob("*.png")), truth


@pytest.fixture(scope="session")
def mnist(tmp_path_factory, digits):
    """The mnist-cnn adapter and its exported, parity-gated ONNX file."""
    from helios.models.config import ModelConfig
    from helios.models import load_model
    from tasks.prepare.config import PrepareConfig
    from tasks.prepare.core import prepare_model

    adapter = load_model(ModelConfig(name="mnist-cnn"))
    prepared = prepare_model(PrepareConfig(), adapter, digits[0], tmp_path_factory.mktemp("mnist-model"))
    return adapter, prepared


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 2-layer BERT (hidden 64, 4 heads) with MiniLM's tokenizer, as a Hugging Face dir."""
    import torch
    from transformers import BertConfig, BertModel

    from helios.models.minilm import load_sentence_model, minilm_path

    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("tiny-bert")
    BertModel(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, max_position_embeddings=128)).save_pretrained(model_dir)
    shutil.copy(minilm_path() / "tokenizer.json", model_dir / "tokenizer.json")
    (model_dir / "sentence_bert_config.json").write_text('{"max_seq_length": 64}')
    return load_sentence_model(model_dir)


@pytest.fixture(scope="session")
def texts(tmp_path_factory) -> list[Path]:
    from helios.data.demo import write_demo

    root = tmp_path_factory.mktemp("texts")
    write_demo("text", 48, root)
    return sorted((root / "files").rglob("*.txt"))


@pytest.fixture
def avx2():
    profile = cpu_profile(cores=2, avx2=True)
    return profile, recommend(profile)
