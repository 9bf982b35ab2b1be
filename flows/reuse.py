"""Reusing a registered model instead of preparing and optimizing again.

Two ways in:

- ``--model models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: that registered version is the run's model;
- a run whose hardware class already has a champion (``champion-<class>``) optimized from the same model and the same
  prepare/optimize settings (the version's ``helios.source_key`` tag) reuses it unless ``optimize.reuse_champion``
  is false (``--set optimize.reuse_champion=false`` re-optimizes).

A registered version (flows/serving_model.py) carries what a run needs: the variant's ONNX file and recipe JSON
(``variant/``), the card (labels, quality figures, export parity, the source model's recipe), the ModelConfig with
the preprocessing settings (the pyfunc's ``model_config``, which also names the source model that refine adapts)
and a Hugging Face model's tokenizer files. The version is downloaded into the run directory's model folder, where
every infer worker (and a GPU worker on the shared volume) reads it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from helios.errors import UsageError
from helios.files import write_json
from helios.models import BUILT_IN, ModelConfig, is_factory
from helios.redact import redact_uri
from tasks.optimize.result import OptimizeResult, VariantReport
from tasks.prepare.core import PreparedModel

log = logging.getLogger(__name__)

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))")
NOT_IN_KEY = {"optimize": {"reuse_champion", "max_regression"}}  # settings that do not change what is built


def is_model_uri(name: str) -> bool:
    """Does ``model.name`` name a registered model (``models:/...``)?"""
    return name.startswith("models:/")


def parse_model_uri(name: str) -> tuple[str, str | None, str | None]:
    """(registered name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``; UsageError else."""
    found = MODEL_URI.fullmatch(name)
    if not found:
        raise UsageError(f"--model {name} is not a registered model URI: use models:/NAME@ALIAS (e.g. "
                         "models:/mnist-cnn@champion) or models:/NAME/VERSION (e.g. models:/mnist-cnn/3)")
    return found["name"], found["alias"], found["version"]


@dataclass(frozen=True)
class ReusedModel:
    """A registered version downloaded into the run: its ModelConfig, variant and card."""

    registered: str
    version: str
    how: str  # "model URI models:/..." or "champion-<class>"
    model: ModelConfig
    onnx_path: Path
    settings: dict
    card: dict

    def describe(self) -> dict:
        """What the report and report.json say about the reuse."""
        return {"registered_model": self.registered, "version": self.version, "via": self.how,
                "model_uri": f"models:/{self.registered}/{self.version}", "variant": self.settings.get("variant"),
                "hardware_class": self.card.get("hardware_class")}

    def prepared(self) -> PreparedModel:
        return PreparedModel(onnx_path=self.onnx_path, exported=False, parity=self.card.get("parity") or {})

    def optimized(self, out_dir: Path, min_gain: float) -> OptimizeResult:
        """An OptimizeResult whose one variant, selected, is the registered one (figures from its card)."""
        card, quality = self.card, self.card.get("quality_vs_fp32") or {}
        variant = VariantReport(
            name=self.settings["variant"], path=self.onnx_path, task=card.get("task", "classifier"),
            size_bytes=self.onnx_path.stat().st_size, latency_p50_ms=card.get("latency_p50_ms"), latency_p95_ms=None,
            latency_p99_ms=None, throughput_per_s=card.get("throughput_per_s"),
            best_batch=self.settings.get("batch_size"), peak_mem_mb=None,
            agreement=quality.get("agreement", quality.get("label_agreement")), cosine=quality.get("cosine"),
            min_cosine=quality.get("min_cosine"), accuracy=card.get("accuracy"),
            providers=tuple(self.settings.get("providers") or ("CPUExecutionProvider",)), selected=True,
            reason=f"reused registered version {self.registered} v{self.version} ({self.how}); not re-optimized")
        table = out_dir / "optimize.json"
        result = OptimizeResult(variant, [variant], table, context={"reused": self.describe(),
                                                                    "budget": {"min_gain": min_gain}})
        write_json(result.to_dict(), table)
        return result


# Bump when an export's outputs or graph change for the same model and settings (2: Hugging Face classifiers export
# their head's input features as ``embeddings`` beside ``logits``).
EXPORT_VERSION = 2


def source_key(config) -> str:
    """A hash of what a champion is optimized from: the model settings (with the bytes of a model file, checkpoint
    or model directory), the prepare and optimize settings, and ``EXPORT_VERSION`` (what Helios's export of a model
    holds: a champion exported before it changed is not reused)."""
    sections = {name: getattr(config, name).model_dump(mode="json", exclude=NOT_IN_KEY.get(name, set()))
                for name in ("model", "prepare", "optimize")}
    sections["export"] = EXPORT_VERSION
    digest = hashlib.sha256(json.dumps(sections, sort_keys=True).encode())
    for name in (config.model.name, config.model.checkpoint):
        if name and name not in BUILT_IN and Path(name).exists():
            files = [Path(name)] if Path(name).is_file() else sorted(p for p in Path(name).rglob("*") if p.is_file())
            for path in files:
                digest.update(str(path.relative_to(name) if path != Path(name) else path.name).encode())
                with path.open("rb") as fh:
                    while chunk := fh.read(1 << 20):
                        digest.update(chunk)
    return digest.hexdigest()[:32]


def registered_model(name: str, tracking_uri: str, dest: Path) -> ReusedModel:
    """Download ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` into ``dest``; UsageError naming the fix when
    the store, the name, the alias or the version is not there."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    registered, alias, version = parse_model_uri(name)
    check_store(tracking_uri, name)
    client = MlflowClient(tracking_uri)
    try:
        found = client.get_model_version_by_alias(registered, alias) if alias else \
            client.get_model_version(registered, version)
    except MlflowException as exc:
        known = ", ".join(sorted(m.name for m in client.search_registered_models())) or "none"
        raise UsageError(f"--model {name}: no such registered version at {redact_uri(tracking_uri)} "
                         f"({exc.message.splitlines()[0]}); registered models: {known}") from exc
    return download_version(client, registered, str(found.version), f"model URI {name}", tracking_uri, dest)


def class_champion(model_name: str, hardware_class: str, tracking_uri: str, dest: Path, key: str) -> ReusedModel | None:
    """This class's champion of ``model_name`` when it was optimized from the same model and settings (``key``),
    else None. The caller decides whether to look (``optimize.reuse_champion``): the pipeline for its own class, the
    GPU deployment's flow for the worker's."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from flows.tags import TAG_SOURCE_KEY
    from flows.tracking_models import class_alias_of, registry_name

    if not store_exists(tracking_uri):
        return None
    client, registered = MlflowClient(tracking_uri), registry_name(model_name)
    alias = class_alias_of(hardware_class)
    try:
        found = client.get_model_version_by_alias(registered, alias)
    except MlflowException:
        return None  # no champion for this class yet
    if found.tags.get(TAG_SOURCE_KEY) != key:
        log.info("%s@%s (version %s) was optimized from another model or other settings: optimizing again",
                 registered, alias, found.version)
        return None
    return download_version(client, registered, str(found.version), alias, tracking_uri, dest)


def download_version(client, registered: str, version: str, how: str, tracking_uri: str, dest: Path) -> ReusedModel:
    """The version's files under ``dest/<name>-v<version>`` and its settings and card."""
    import mlflow.artifacts
    from mlflow.models import Model

    target = dest / f"{registered}-v{version}"
    target.mkdir(parents=True, exist_ok=True)
    # the version's own download URI: a models:/ URI would be resolved against MLflow's global registry URI
    source = client.get_model_version_download_uri(registered, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target),
                                                     tracking_uri=tracking_uri))
    flavor = Model.load(str(local)).flavors.get("python_function", {})
    settings = dict(flavor.get("config") or {})  # the pyfunc's model_config, as MLmodel stores it
    if "variant" not in settings or "model" not in settings:
        raise UsageError(f"models:/{registered}/{version} was not registered by Helios (no variant settings): "
                         "pass a model Helios registered, or the model file itself to --model")
    artifacts = {p.name: str(p) for p in (local / "artifacts").iterdir()}
    onnx_path = local / "artifacts" / "variant" / f"{settings['variant']}.onnx"
    card = json.loads((local / "artifacts" / "card.json").read_text(encoding="utf-8"))
    log.info("reusing %s version %s (%s): variant %s, optimized on %s", registered, version, how,
             settings["variant"], card.get("hardware_class"))
    return ReusedModel(registered, version, how, reused_config(settings, artifacts, onnx_path), onnx_path,
                       settings, card)


def reused_config(settings: dict, artifacts: dict, onnx_path: Path) -> ModelConfig:
    """The logged ModelConfig with what is not on this machine replaced by the version's own files: a user's ONNX
    file by the registered variant, a missing Hugging Face directory by its logged tokenizer files. A built-in name,
    a ``module:factory`` and its checkpoint are kept: they are the source model that refine adapts."""
    cfg = ModelConfig(**settings["model"])
    if cfg.name.endswith(".onnx"):
        return cfg.model_copy(update={"name": str(onnx_path)})
    local = cfg.name in BUILT_IN or is_factory(cfg.name) or Path(cfg.name).is_dir()
    if not local and "tokenizer" in artifacts:
        return cfg.model_copy(update={"name": artifacts["tokenizer"]})
    return cfg


def store_exists(tracking_uri: str) -> bool:
    """False for a local SQLite store that has not been created yet (nothing registered; opening it would create
    it while the run's own tracking start may be creating it too)."""
    return not tracking_uri.startswith("sqlite:///") or Path(tracking_uri.removeprefix("sqlite:///")).is_file()


def check_store(tracking_uri: str, name: str) -> None:
    if not store_exists(tracking_uri):
        raise UsageError(f"--model {name}: no MLflow store at {redact_uri(tracking_uri)}: run Helios once to "
                         "register a model, or set tracking.mlflow_uri to the store that holds it")
