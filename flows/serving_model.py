"""Logging the selected variant as the servable pyfunc model of flows/serving.py, with its model card.

What is logged: the variant's ONNX file and its recipe (artifact ``variant/``), the tokenizer files of a Hugging Face
directory (``tokenizer/``), the card (``card.json``: labels, recipe, parity and quality figures, hardware class), the
settings ``load_context`` needs as the pyfunc's ``model_config`` (the ModelConfig, variant, providers, batch size),
a signature and an input example. The code is ``flows/serving_entry.py``; Helios itself must be installed where the
model is loaded (it is not on PyPI, so MLflow cannot install it: serve with ``--env-manager local``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.serving import INPUT_COLUMNS
from flows.tags import TAG_ACCURACY, TAG_INPUT, TAG_LABELS, TAG_MODALITY, TAG_PARITY, TAG_TASK
from helios.models import BUILT_IN, ModelAdapter, ModelConfig, load_model

ENTRY = Path(__file__).with_name("serving_entry.py")
# what load_model needs of a Hugging Face directory without its weights (preprocessor_config.json: image classifiers)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "sentence_bert_config.json",
                   "preprocessor_config.json")


def log_serving_model(result, model: ModelConfig, hardware_class: str, run_id: str, registered: str,
                      requirements: list[str]):
    """``Model.log`` of the pyfunc under ``run_id``, registered as a new version of ``registered``.

    Returns (ModelInfo, card). Logging runs the input example through the loaded model (MLflow's own check)."""
    import mlflow
    from mlflow.models import Model

    adapter = load_model(model)
    selected = result.selected
    card = model_card(result, adapter, hardware_class)
    with tempfile.TemporaryDirectory(prefix="helios-serving-") as tmp:
        artifacts = stage_artifacts(Path(tmp), selected, model, card)
        settings = {"model": model.model_dump(mode="json"), "variant": selected.name,
                    "providers": list(selected.providers), "intra_op_threads": 0,
                    # the batch the optimize stage measured fastest (int8 minilm on a 2-core AVX2/AMX CPU: 1, where
                    # batches of 32 padded texts ran 3x slower); a request's rows run in batches of that size
                    "batch_size": selected.best_batch or 32}
        with no_download_bars():
            info = Model.log(
                artifact_path=None, name="model", flavor=mlflow.pyfunc, run_id=run_id, registered_model_name=registered,
                python_model=str(ENTRY), artifacts=artifacts, model_config=settings, signature=signature(adapter),
                input_example=input_example(adapter), pip_requirements=requirements, metadata=card,
            )
    return info, card


@contextmanager
def no_download_bars() -> Iterator[None]:
    """MLflow's check of the input example downloads the model it just logged, with a tqdm bar per file on stderr
    ("Downloading artifacts: 100%"), which no user asked for; the variable is restored afterwards."""
    name, before = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def stage_artifacts(tmp: Path, selected, model: ModelConfig, card: dict) -> dict[str, str]:
    """Copy what the served model needs into ``tmp``: the variant and its recipe, the card, a tokenizer."""
    variant = tmp / "variant"
    variant.mkdir()
    shutil.copyfile(selected.path, variant / f"{selected.name}.onnx")
    recipe = Path(selected.path).with_suffix(".json")
    if recipe.is_file():  # says whether the graph was optimized offline for these providers (tasks/session.py)
        shutil.copyfile(recipe, variant / f"{selected.name}.json")
    (tmp / "card.json").write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")
    artifacts = {"variant": str(variant), "card": str(tmp / "card.json")}
    source = Path(model.name)
    if model.name not in BUILT_IN and not model.name.endswith(".onnx") and source.is_dir():  # as load_model decides
        tokenizer = tmp / "tokenizer"
        tokenizer.mkdir()
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, tokenizer / name)
        artifacts["tokenizer"] = str(tokenizer)
    return artifacts


def model_card(result, adapter: ModelAdapter, hardware_class: str) -> dict[str, Any]:
    """What a person should know about the served model (also the registered version's description and tags)."""
    v = result.selected
    quality = {"agreement": v.agreement} if v.task == "classifier" else {
        "cosine": v.cosine, "min_cosine": v.min_cosine, "label_agreement": v.agreement}
    return {
        "model": adapter.name, "modality": adapter.modality, "task": adapter.task, "labels": list(adapter.labels),
        "variant": v.name, "hardware_class": hardware_class, "providers": list(v.providers),
        "selection": v.reason, "quality_vs_fp32": quality, "accuracy": v.accuracy,
        "parity": result.context.get("parity"), "throughput_per_s": v.throughput_per_s,
        "latency_p50_ms": v.latency_p50_ms, "recipe": read_recipe(Path(v.path)), "source": adapter.recipe,
        "input": "one row per item: content_b64 (a file's bytes, base64) or text (text models)",
        "output": "status, label, confidence, probabilities (per label)" + (
            ", embedding" if adapter.task == "embedder" else "") + ", error, flag",
    }


def read_recipe(onnx_path: Path) -> dict:
    recipe = onnx_path.with_suffix(".json")
    return json.loads(recipe.read_text(encoding="utf-8")) if recipe.is_file() else {}


def signature(adapter: ModelAdapter):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema([ColSpec("string", name, required=False) for name in INPUT_COLUMNS])
    columns = [ColSpec("string", "status"), ColSpec("string", "label", required=False),
               ColSpec("double", "confidence", required=False),
               ColSpec(Array("double"), "probabilities", required=False)]
    if adapter.task == "embedder":
        columns.append(ColSpec(Array("double"), "embedding", required=False))
    columns += [ColSpec("string", "error", required=False), ColSpec("string", "flag", required=False)]
    return ModelSignature(inputs=inputs, outputs=Schema(columns))


def input_example(adapter: ModelAdapter):
    """A text for text models; for image models a blank image of the model's input size, base64."""
    import base64
    import io

    import pandas as pd
    from PIL import Image

    if adapter.modality == "text":
        return pd.DataFrame({"text": ["The central bank raised interest rates to slow inflation."]})
    shape = next(iter(adapter.example_inputs(1).values())).shape  # (1, C, H, W)
    buffer = io.BytesIO()
    Image.new("L" if shape[1] == 1 else "RGB", (shape[3], shape[2])).save(buffer, format="PNG")
    return pd.DataFrame({"content_b64": [base64.b64encode(buffer.getvalue()).decode("ascii")]})


def describe_version(client, registered: str, version: str, card: dict) -> None:
    """The registered version's description (a model card in the MLflow UI) and tags saying the same."""
    quality = ", ".join(f"{k} {val:.4f}" for k, val in card["quality_vs_fp32"].items() if val is not None)
    parity = card.get("parity") or {}
    lines = [
        f"**{card['model']}** ({card['modality']} {card['task']}), variant **{card['variant']}**, selected on "
        f"hardware class `{card['hardware_class']}` ({', '.join(card['providers'])}): {card['selection']}.",
        f"- labels: {', '.join(card['labels'])}",
        f"- quality vs fp32: {quality or '-'}; accuracy on the optimize sample: {card['accuracy']}",
        f"- export parity with PyTorch: {json.dumps(parity) if parity else '-'}",
        f"- throughput {card['throughput_per_s']}/s, latency p50 {card['latency_p50_ms']} ms",
        f"- input: {card['input']}; output: {card['output']}",
        "- serve: `helios serve --model models:/NAME@ALIAS` or `mlflow models serve -m models:/NAME@ALIAS "
        "--env-manager local` (Helios installed)",
    ]
    client.update_model_version(registered, version, description="\n".join(lines))
    tags = {TAG_LABELS: ",".join(card["labels"]), TAG_TASK: card["task"], TAG_MODALITY: card["modality"],
            TAG_ACCURACY: str(card["accuracy"]), TAG_PARITY: json.dumps(parity), TAG_INPUT: ",".join(INPUT_COLUMNS)}
    for key, value in tags.items():
        client.set_model_version_tag(registered, version, key, value[:5000])
