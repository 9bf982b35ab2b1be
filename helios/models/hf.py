"""Hugging Face model directories, dispatched on ``config.json``'s ``architectures``.

- ``*ForSequenceClassification`` -> text classifier: the directory's own head and ``id2label``, its tokenizer.
- ``*ForImageClassification`` -> image classifier: its own head and ``id2label``, the preprocessing its
  ``preprocessor_config.json`` declares (``helios.models.hf_image``).
  Both export ``logits`` and ``embeddings``: the pooled features the head's final linear layer receives, float32,
  not normalized (``classifier_module``).
- an encoder without a head (``*Model``) -> embedder: the zero-shot sentence model of ``helios.models.minilm``.

``model.labels`` may rename the classes; it must have the head's width. Loading is quiet: transformers' load
report and progress bar are switched off while the weights load, and Helios checks the load itself — weights the
head needs but the directory lacks are an error (the head would be random), unused weights in the directory are
one line in the log.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helios.errors import UsageError
from helios.models.base import Decoded, InputError, ModelAdapter
from helios.models.config import ModelConfig
from helios.models.hf_image import ImageSteps, read_steps
from helios.models.images import open_image
from helios.models.minilm import decode_text, load_sentence_model, load_tokenizer
from helios.models.quiet import quiet_transformers

log = logging.getLogger(__name__)
TEXT_HEAD, IMAGE_HEAD = "ForSequenceClassification", "ForImageClassification"
CLASSIFIER_OUTPUTS = ("logits", "embeddings")  # embeddings: the pooled features the head's last Linear sees
SUPPORTED = ("*ForSequenceClassification (text classifier), *ForImageClassification (image classifier), "
             "or an encoder without a head (*Model, a zero-shot embedder)")
_REPORTED: set[str] = set()  # directories whose unused weights were already logged (torch_module runs per stage)


def read_config(model_dir: Path) -> dict:
    """``config.json`` as a dict; UsageError naming the file when it is not JSON."""
    path = model_dir / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not readable JSON ({exc}): pass a directory written by save_pretrained") from exc


def model_kind(config: dict, model_dir: Path) -> str:
    """``text-classifier``, ``image-classifier`` or ``embedder``; UsageError naming what is supported otherwise."""
    archs = config.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch.endswith(TEXT_HEAD):
        return "text-classifier"
    if arch.endswith(IMAGE_HEAD):
        return "image-classifier"
    if not arch or (arch.endswith("Model") and not arch.endswith("PreTrainedModel")):
        return "embedder"
    raise UsageError(f"{model_dir}/config.json declares architectures {archs}: Helios runs {SUPPORTED}")


DEFAULT_NUM_LABELS = 2  # transformers' PretrainedConfig default


def class_labels(config: dict, override, model_dir: Path) -> tuple[str, ...]:
    """The head's labels in index order from ``id2label``, or ``model.labels`` when given (same width)."""
    id2label = config.get("id2label") or {}
    # transformers writes neither for its default head (two labels, LABEL_0 and LABEL_1): a binary classifier
    # fine-tuned without naming its labels is saved that way, and transformers itself reads it back as two
    width = len(id2label) or int(config.get("num_labels", DEFAULT_NUM_LABELS) or 0)
    if width == 0:
        raise UsageError(f"{model_dir}/config.json has no id2label or num_labels: save the fine-tuned model's config")
    if override:
        if len(override) != width:
            raise UsageError(f"model.labels has {len(override)} labels but the head of {model_dir} has {width} outputs: "
                             f"give {width} labels, or drop model.labels to use the model's id2label")
        return tuple(override)
    return tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(width))


def weights_digest(model_dir: Path) -> str:
    """SHA-256 of the first MiB of each weights file: identifies the weights without reading gigabytes."""
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    return hashlib.sha256(b"".join(w.read_bytes()[:1 << 20] for w in weights)).hexdigest()[:16]


def load_pretrained(auto_class, model_dir: Path):
    """``auto_class.from_pretrained(model_dir)`` in eval mode, quietly; missing head weights are an error."""
    with quiet_transformers():
        model, info = auto_class.from_pretrained(str(model_dir), local_files_only=True, output_loading_info=True)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise UsageError(f"{model_dir} lacks weights for {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else "")
                         + ": they would be random; save the trained model with save_pretrained")
    unused = sorted(info.get("unexpected_keys") or [])
    if unused and str(model_dir) not in _REPORTED:
        _REPORTED.add(str(model_dir))
        log.warning("%s: %d weight(s) in the directory are not used by %s (e.g. %s)", model_dir, len(unused),
                    type(model).__name__, unused[0])
    return model.eval()


def head_linear(model):
    """The head's final projection: the model's last ``nn.Linear``, when it has the labels' width; else None."""
    from torch import nn

    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    return last if last is not None and last.out_features == model.config.num_labels else None


def classifier_module(model, model_dir: Path):
    """A module whose forward takes the adapter's inputs positionally and returns the logits tensor; while
    ``torch.onnx.export`` traces it, ``(logits, embeddings)``. Refine, parity and tent call it eagerly and want
    the logits alone; the exported graph carries both outputs (CLASSIFIER_OUTPUTS).

    ``embeddings`` are what the head's final ``nn.Linear`` receives (BERT: the pooler output; ViT: the
    layernormed CLS token; ResNet/ConvNeXT: the pooled features), float32 and not normalized, captured by a
    forward pre-hook that exists only while the export traces."""
    import torch
    from torch import nn

    if head_linear(model) is None:
        raise UsageError(f"{model_dir}: {type(model).__name__}'s head does not end in an nn.Linear of its "
                         f"{model.config.num_labels} labels' width, so Helios cannot export its pooled features: "
                         "use a classifier whose head ends in a linear layer (BERT, RoBERTa, ViT, ResNet ...)")

    class Classifier(nn.Module):
        def __init__(self, inner, names):
            super().__init__()
            self.model, self.names = inner, names

        def forward(self, *inputs):
            if not torch.onnx.is_in_onnx_export():
                return self.model(**dict(zip(self.names, inputs))).logits
            return self.logits_and_features(*inputs)

        def logits_and_features(self, *inputs):
            """(logits, the input of the head's final Linear as float32 (batch, dim))."""
            seen = []
            handle = head_linear(self.model).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
            try:
                logits = self.model(**dict(zip(self.names, inputs))).logits
            finally:
                handle.remove()
            features = seen[-1]
            if features.dim() != 2 or features.shape[0] != logits.shape[0]:
                raise UsageError(f"{model_dir}: the head of {type(self.model).__name__} sees features of shape "
                                 f"{tuple(features.shape)}, not one vector per input: it has no pooled features "
                                 "to export as embeddings")
            return logits, features.float()

    names = ("pixel_values",) if model.main_input_name == "pixel_values" else ("input_ids", "attention_mask")
    return Classifier(model, names).eval()


def text_max_length(model_dir: Path, config: dict) -> int:
    """sentence_bert_config's max_seq_length, else the tokenizer's model_max_length, within the position table."""
    positions = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # their position ids start after the padding index
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = model_dir / name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get(key)
            if isinstance(value, int) and 0 < value < 1_000_000:
                return min(value, positions)
    return positions


@dataclass
class HfTextClassifier(ModelAdapter):
    """A fine-tuned ``*ForSequenceClassification`` directory: its tokenizer, its head, its labels."""

    model_dir: Path = Path(".")
    max_length: int = 512
    _tokenizer: object = field(default=None, repr=False)

    def torch_module(self):
        from transformers import AutoModelForSequenceClassification

        return classifier_module(load_pretrained(AutoModelForSequenceClassification, self.model_dir),
                                 self.model_dir)

    def tokenizer(self):
        """The directory's fast tokenizer, truncating at ``max_length`` and padding to the batch's longest."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_dir, self.max_length, _pad_token(self.model_dir))
        return self._tokenizer

    def example_inputs(self, batch: int = 2) -> dict[str, np.ndarray]:
        return self.collate([Decoded("an example sentence for export")] * batch)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                "logits": {0: "batch"}, "embeddings": {0: "batch"}}

    def preprocess(self, data: bytes) -> Decoded:
        return decode_text(data)

    def collate(self, items: list[Decoded]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer().encode_batch([d.value for d in items])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask}


def _pad_token(model_dir: Path) -> str:
    path = model_dir / "tokenizer_config.json"
    pad = json.loads(path.read_text(encoding="utf-8")).get("pad_token") if path.is_file() else None
    if isinstance(pad, dict):  # older files store AddedToken dicts
        pad = pad.get("content")
    return pad or "[PAD]"


@dataclass
class HfImageClassifier(ModelAdapter):
    """A ``*ForImageClassification`` directory: images decoded upright in the model's mode, then its processor."""

    model_dir: Path = Path(".")
    steps: ImageSteps | None = None
    channels: int = 3
    max_pixels: int = 50_000_000

    def torch_module(self):
        from transformers import AutoModelForImageClassification

        return classifier_module(load_pretrained(AutoModelForImageClassification, self.model_dir),
                                 self.model_dir)

    def example_inputs(self, batch: int = 2) -> dict[str, np.ndarray]:
        return {"pixel_values": np.zeros((batch, self.channels, *self.steps.output_size()), dtype=np.float32)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"pixel_values": {0: "batch"}, "logits": {0: "batch"}, "embeddings": {0: "batch"}}

    def preprocess(self, data: bytes) -> Decoded:
        return Decoded(self.steps.apply(open_image(data, self.channels, self.max_pixels)))

    def collate(self, items: list[Decoded]) -> dict[str, np.ndarray]:
        return {"pixel_values": np.stack([d.value for d in items])}


def load_hf_model(model_dir: Path, cfg: ModelConfig) -> ModelAdapter:
    """The adapter for a Hugging Face directory (see the module docstring); UsageError for what cannot run."""
    config = read_config(model_dir)
    kind = model_kind(config, model_dir)
    if kind == "embedder":
        try:
            return load_sentence_model(model_dir, cfg.label_descriptions)
        except InputError as exc:
            raise UsageError(str(exc)) from exc
    labels = class_labels(config, cfg.labels, model_dir)
    recipe = {"model": model_dir.name, "architecture": config["architectures"][0],
              "weights_sha256_1mb": weights_digest(model_dir), "labels": list(labels),
              "outputs": list(CLASSIFIER_OUTPUTS)}  # part of the recipe: earlier exports had logits alone
    if kind == "text-classifier":
        if not (model_dir / "tokenizer.json").is_file():
            raise UsageError(f"{model_dir} has no tokenizer.json: save the model's fast tokenizer with it "
                             "(AutoTokenizer.from_pretrained(...).save_pretrained(dir))")
        max_length = text_max_length(model_dir, config)
        return HfTextClassifier(
            name=model_dir.name, modality="text", task="classifier", labels=labels,
            input_names=("input_ids", "attention_mask"), output_names=CLASSIFIER_OUTPUTS,
            recipe={**recipe, "max_length": max_length},
            model_dir=model_dir, max_length=max_length)
    channels = int(config.get("num_channels") or 3)
    if channels not in (1, 3):
        raise UsageError(f"{model_dir}/config.json has num_channels={channels}: Helios feeds grey (1) or RGB (3) images")
    steps = read_steps(model_dir, channels)
    steps.output_size()  # a processor that leaves images at different sizes fails here, not mid-run
    return HfImageClassifier(
        name=model_dir.name, modality="image", task="classifier", labels=labels, input_names=("pixel_values",),
        output_names=CLASSIFIER_OUTPUTS, recipe={**recipe, "preprocessing": steps.to_dict()}, model_dir=model_dir,
        steps=steps, channels=channels, max_pixels=cfg.max_image_pixels)
