"""Tiny Hugging Face model directories built from configurations, as a user's save_pretrained would leave them
(a plain module: tests import it after putting this folder on sys.path)."""
from __future__ import annotations

import shutil
from pathlib import Path

TOPICS = ("world", "sports", "business", "science")
ANIMALS = ("cat", "dog", "bird")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def _labels(labels) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def copy_minilm_tokenizer(dst: Path) -> None:
    """The packaged MiniLM's tokenizer files (BERT uncased vocabulary)."""
    from helios.models.minilm import minilm_path

    for name in TOKENIZER_FILES:
        shutil.copyfile(minilm_path() / name, dst / name)


def text_classifier_dir(dst: Path, labels=TOPICS, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """A BertForSequenceClassification with random weights and the MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=hidden * 2, **_labels(labels))
    BertForSequenceClassification(config).eval().save_pretrained(dst)
    copy_minilm_tokenizer(dst)
    return dst


def vit_dir(dst: Path, labels=ANIMALS, image_size: int = 32, seed: int = 0) -> Path:
    """A ViTForImageClassification (LayerNorm, no BatchNorm) with a ViTImageProcessor resizing to image_size."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, **_labels(labels))
    ViTForImageClassification(config).eval().save_pretrained(dst)
    ViTImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(dst)
    return dst


def resnet_dir(dst: Path, labels=ANIMALS, shortest_edge: int = 32, seed: int = 0) -> Path:
    """A ResNetForImageClassification (BatchNorm) with a ConvNextImageProcessor (shortest edge / crop_pct, crop)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", **_labels(labels))
    model = ResNetForImageClassification(config).eval()
    with torch.no_grad():  # non-trivial BN statistics, so BN-adapt has something to move
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(dst)
    ConvNextImageProcessorPil(size={"shortest_edge": shortest_edge}, crop_pct=0.875).save_pretrained(dst)
    return dst
