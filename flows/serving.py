"""The champion as an MLflow pyfunc model: Helios's own preprocessing around an ONNX Runtime session.

Input, one row per item (a pandas DataFrame; over HTTP ``{"dataframe_records": [{"content_b64": "..."}, ...]}``):

- ``content_b64``: a file's bytes, base64 — an image for image models, a text file for text models;
- ``text``: a text, for text models.

Each row gives exactly one of the two. Output, one row per input row: ``status`` (``ok`` | ``error``), ``label``,
``confidence`` (top-1 probability), ``probabilities`` (one per label, in the order of the model's labels),
``embedding`` (embedders only), ``error`` (why an item failed) and ``flag`` (a warning on an ok item). A bad item
gets an error row and the rest of the request is answered, as bad files become error rows in ``predictions.parquet``.

Decoding, resizing, normalizing and tokenizing are the adapter's (``helios.models``), the session is opened by
``tasks.session`` as in the infer stage: the same code as the pipeline, not a copy. This module imports neither
Prefect nor the pipeline, so the model loads in any process where Helios is installed (``--env-manager local``).
MLflow builds it from ``flows/serving_entry.py`` ("models from code": MLflow 3 refuses pickled models by default).
"""
from __future__ import annotations

import base64
import binascii
import threading
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from helios.models import Decoded, InputError, ModelAdapter, ModelConfig, load_model

INPUT_COLUMNS = ("content_b64", "text")
OUTPUT_COLUMNS = ("status", "label", "confidence", "probabilities", "embedding", "error", "flag")


class HeliosModel(PythonModel):
    """``load_context`` rebuilds the adapter from the logged ModelConfig and opens the logged ONNX variant."""

    def load_context(self, context) -> None:
        from tasks.session import open_session, saved_optimized_for

        settings = dict(context.model_config or {})
        onnx_path = Path(context.artifacts["variant"]) / f"{settings['variant']}.onnx"
        self.adapter = load_model(serving_config(settings, context.artifacts, onnx_path))
        providers = tuple(settings.get("providers") or ("CPUExecutionProvider",))
        self.session = open_session(onnx_path, providers, int(settings.get("intra_op_threads", 0)),
                                    optimized=saved_optimized_for(onnx_path, providers),
                                    spin=bool(settings.get("spin", False))).session
        names = {o.name for o in self.session.get_outputs()}
        # Classifiers' graphs carry embeddings too (infer.outputs); the served columns are the label's: skip them.
        wanted = ("logits", "embeddings") if self.adapter.task == "embedder" else ("logits",)
        self.outputs = [n for n in wanted if n in names] or [self.session.get_outputs()[0].name]
        self.batch_size = int(settings.get("batch_size", 32))
        # The server runs requests in threads: one session run at a time uses every core (the intra-op threads);
        # more at once only oversubscribe them. Decoding the next request overlaps the run.
        self._slots = threading.BoundedSemaphore(int(settings.get("concurrent_runs", 1)))

    def run(self, feeds: dict) -> list:
        with self._slots:
            return self.session.run(self.outputs, feeds)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One output row per input row (see the module docstring)."""
        return predict_frame(self.adapter, self.run, self.outputs, to_frame(model_input), self.batch_size)


def serving_config(settings: dict, artifacts: dict, onnx_path: Path) -> ModelConfig:
    """The logged ModelConfig, with paths of the logging machine replaced by the model's own artifacts: a user's
    ONNX file by the logged variant, a Hugging Face directory by its logged tokenizer files; a checkpoint is
    dropped (preprocessing never needs the weights)."""
    cfg = ModelConfig(**settings["model"])
    update: dict = {"checkpoint": None}
    if cfg.name.endswith(".onnx"):
        update["name"] = str(onnx_path)
    elif "tokenizer" in artifacts:
        update["name"] = str(artifacts["tokenizer"])
    return cfg.model_copy(update=update)


def to_frame(model_input) -> pd.DataFrame:
    """A DataFrame from what ``predict`` may be handed (DataFrame, list of records, dict of columns)."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, (list, dict)):
        return pd.DataFrame(model_input)
    raise TypeError(f"input of type {type(model_input).__name__} is not a table: send a DataFrame (or records) "
                    f"with the columns {', '.join(INPUT_COLUMNS)}")


def decode_item(adapter: ModelAdapter, content_b64, text) -> Decoded:
    """One row's bytes through the adapter's own ``preprocess``; InputError names what is wrong and the fix."""
    has_b64, has_text = isinstance(content_b64, str), isinstance(text, str)
    if has_b64 == has_text:
        raise InputError(f"{'both' if has_b64 else 'neither'} content_b64 and text given: give exactly one per item "
                         "(content_b64 = base64 of a file's bytes, text = a text for text models)")
    if has_text:
        if adapter.modality != "text":
            raise InputError(f"text given to the {adapter.modality} model {adapter.name}: send the file's bytes, "
                             "base64-encoded, as content_b64")
        return adapter.preprocess(text.encode("utf-8", "surrogatepass"))  # lone surrogates: flagged as not UTF-8
    try:
        data = base64.b64decode(content_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"content_b64 is not valid base64 ({exc}): send base64.b64encode(file_bytes).decode()") from exc
    return adapter.preprocess(data)


def decode_frame(adapter: ModelAdapter, frame: pd.DataFrame) -> tuple[list, list, list]:
    """(decoded item or None, error, flag) per row."""
    n = len(frame)
    columns = {c: frame[c].tolist() if c in frame.columns else [None] * n for c in INPUT_COLUMNS}
    items, errors, flags = [None] * n, [None] * n, [None] * n
    for i, (b64, text) in enumerate(zip(columns["content_b64"], columns["text"])):
        try:
            items[i] = decode_item(adapter, b64, text)
        except InputError as exc:
            errors[i] = str(exc)
            continue
        except Exception as exc:  # a decoder bug on one odd item costs that item's row, not the request
            errors[i] = f"could not decode: {type(exc).__name__}: {exc}"
            continue
        flags[i] = items[i].warning
    return items, errors, flags


def predict_frame(adapter: ModelAdapter, run, outputs: list[str], frame: pd.DataFrame,
                  batch_size: int) -> pd.DataFrame:
    """Decode every row, run the decodable ones in batches of ``batch_size`` (``run(feeds)`` -> ``outputs``),
    answer every row."""
    items, errors, flags = decode_frame(adapter, frame)
    n = len(items)
    answer = {c: [None] * n for c in OUTPUT_COLUMNS}
    ok = [i for i, item in enumerate(items) if item is not None]
    for start in range(0, len(ok), batch_size):
        rows = ok[start:start + batch_size]
        results = run(adapter.collate([items[i] for i in rows]))
        scored = adapter.postprocess(results[0])
        for j, i in enumerate(rows):
            answer["label"][i] = adapter.labels[int(scored.label_idx[j])]
            answer["confidence"][i] = float(scored.confidence[j])
            answer["probabilities"][i] = scored.probs[j].astype(float).tolist()
            if "embeddings" in outputs:
                answer["embedding"][i] = np.asarray(results[outputs.index("embeddings")][j], float).tolist()
    answer["status"] = ["error" if e else "ok" for e in errors]
    answer["error"], answer["flag"] = errors, flags
    if adapter.task != "embedder":
        del answer["embedding"]
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in answer.items()})
