"""MLflow for the optimize stage: one nested run per variant, and the champion in the model registry.

Everything goes by explicit run id through ``MlflowClient`` (tasks run in worker threads, so there is no
reliable active run). Champions are per hardware class, because a throughput measured on one machine says
nothing about another: the version tags record the class and the figures, and the alias ``champion-<class>``
names the best version for that class.

The global alias ``champion`` (what ``helios serve`` and ``models:/NAME@champion`` load) is always
``champion-<C>`` for one class C, the serving class: ``tracking.champion_class`` when set, else the class of the
version that holds ``champion`` now, else (no ``champion`` yet) the class of the first version ever registered.
A new champion on another class never moves it.

The regression gate ("beats"): the new selected variant is within the quality budget (it was selected), its
accuracy on the labelled sample is at most ``max_regression`` points below the class champion's (when both were
measured with labels), and its throughput is at least ``(1 + min_gain)`` times the champion's (faster beyond
noise). A first version for a class always becomes its champion.
"""
from __future__ import annotations

import re
import time
from typing import Any

from flows.tags import (TAG_ACCURACY, TAG_CHAMPION_COMPARISON, TAG_HARDWARE_CLASS, TAG_PARENT_RUN, TAG_PROVIDERS,
                        TAG_QUALITY, TAG_QUALITY_METRIC, TAG_REASON, TAG_RUN_ID, TAG_SELECTED, TAG_SOURCE_KEY,
                        TAG_THROUGHPUT, TAG_VARIANT)
from helios.models.config import ModelConfig
from tasks.optimize.result import OptimizeResult, VariantReport

ALIAS = "champion"
MAX_REGRESSION = 0.5  # accuracy points a new champion may lose against the current one (optimize.max_regression)
_NUMERIC = ("size_bytes", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_per_s", "best_batch",
            "peak_mem_mb", "agreement", "cosine", "min_cosine", "label_agreement", "accuracy")


def log_variants(result: OptimizeResult, parent_run_id: str, tracking_uri: str) -> None:
    """One nested run per variant under ``parent_run_id`` with its figures, verdict and recipe."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    now = int(time.time() * 1000)
    for variant in result.variants:
        data = variant.to_dict()
        run = client.create_run(experiment_id, run_name=f"variant-{variant.name}", tags={
            TAG_PARENT_RUN: parent_run_id, TAG_VARIANT: variant.name,
            TAG_SELECTED: str(variant.selected).lower(), TAG_REASON: variant.reason[:5000]})
        metrics = [Metric(k, float(data[k]), now, 0) for k in _NUMERIC if isinstance(data.get(k), (int, float))]
        metrics += [Metric(f"throughput_batch_{b}", float(tp), now, 0) for b, tp in variant.throughput_by_batch.items()]
        metrics.append(Metric("selected", float(variant.selected), now, 0))
        params = [Param("providers", ",".join(variant.providers) or "-"),
                  Param("requested_providers", ",".join(variant.requested_providers) or "-"),
                  Param("fell_back", str(variant.fell_back))]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        recipe = variant.path.with_suffix(".json")
        if recipe.is_file():
            client.log_artifact(run.info.run_id, str(recipe))
        client.set_terminated(run.info.run_id, "FAILED" if variant.error else "FINISHED")
    if result.table_path.is_file():
        client.log_artifact(parent_run_id, str(result.table_path))


def register_champion(result: OptimizeResult, model_name: str, hardware_class: str, run_id: str,
                      tracking_uri: str, model: ModelConfig | None = None, *, champion_class: str | None = None,
                      max_regression: float = MAX_REGRESSION, source_key: str | None = None) -> dict[str, Any]:
    """Log the selected variant as the servable pyfunc model (flows/serving.py; ``model``: the run's ModelConfig,
    default ``ModelConfig(name=model_name)``), register it as a new version of ``model_name`` with a model card,
    move ``champion-<hardware_class>`` when it passes the regression gate, and keep ``champion`` on the serving
    class (``champion_class``, see the module docstring). ``source_key`` (flows/reuse.py) says which model and
    settings the version was optimized from, so a later run of the same can reuse it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.serving_model import describe_version, log_serving_model

    mlflow.set_tracking_uri(tracking_uri)  # Model.log resolves the store from the global URI
    client = MlflowClient(tracking_uri)
    # MLflow 3 files the LoggedModel under the *active* experiment, not the run's: without this it went to the
    # Default experiment, with its artifacts in ./mlruns of whatever directory the command ran in.
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    selected = result.selected
    registered = registry_name(model_name)
    info, card = log_serving_model(result, model or ModelConfig(name=model_name), hardware_class, run_id, registered,
                                   runtime_requirements())
    version = str(info.registered_model_version)
    tags = version_tags(selected, hardware_class, run_id)
    if source_key:
        tags[TAG_SOURCE_KEY] = source_key
    for key, value in tags.items():
        client.set_model_version_tag(registered, version, key, value)
    describe_version(client, registered, version, card)
    class_alias = class_alias_of(hardware_class)
    current = _current(client, registered, class_alias)
    margin = float(result.context.get("budget", {}).get("min_gain", 0.05))
    comparison = compare(selected, current, margin, max_regression)
    if comparison["beats"]:
        client.set_registered_model_alias(registered, class_alias, version)
    follow_serving_class(client, registered, champion_class, hardware_class)
    client.set_model_version_tag(registered, version, TAG_CHAMPION_COMPARISON, comparison["why"])
    aliases = [a for a in (ALIAS, class_alias) if _version_of(client, registered, a) == version]
    return {"registered_model": registered, "version": version, "model_uri": info.model_uri,
            "hardware_class": hardware_class, "promoted": comparison["beats"], "aliases": aliases,
            "comparison": comparison}


def class_alias_of(hardware_class: str) -> str:
    """The registry alias of one hardware class's champion: ``champion-<class>``."""
    return f"{ALIAS}-{slug(hardware_class)}"


def serving_class(client, registered: str, champion_class: str | None, hardware_class: str) -> str:
    """The class whose champion ``champion`` names: the setting, else the class of the current ``champion``
    version, else ``hardware_class`` (the first class to get a champion)."""
    if champion_class:
        return champion_class
    current = _current(client, registered, ALIAS)
    return (current or {}).get(TAG_HARDWARE_CLASS) or hardware_class


def follow_serving_class(client, registered: str, champion_class: str | None, hardware_class: str) -> bool:
    """Point ``champion`` at ``champion-<serving class>`` (when that class has one); True when it moved."""
    target = _version_of(client, registered, class_alias_of(serving_class(client, registered, champion_class,
                                                                          hardware_class)))
    if target is None or target == _version_of(client, registered, ALIAS):
        return False
    client.set_registered_model_alias(registered, ALIAS, target)
    return True


def runtime_requirements() -> list[str]:
    """Pins of what the served model imports besides Helios itself (stated, so MLflow does not spawn a process to
    guess): onnx, the preprocessing libraries and the installed ONNX Runtime distribution."""
    from importlib.metadata import PackageNotFoundError, version

    pins = [f"{dist}=={version(dist)}" for dist in ("onnx", "numpy", "pandas", "pillow", "tokenizers", "pydantic")]
    for dist in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return [*pins, f"{dist}=={version(dist)}"]
        except PackageNotFoundError:
            continue
    return pins


def version_tags(v: VariantReport, hardware_class: str, run_id: str) -> dict[str, str]:
    quality = v.agreement if v.task == "classifier" else v.cosine
    return {TAG_HARDWARE_CLASS: hardware_class, TAG_VARIANT: v.name, TAG_RUN_ID: run_id,
            TAG_THROUGHPUT: str(v.throughput_per_s), TAG_QUALITY: str(quality),
            TAG_QUALITY_METRIC: "agreement" if v.task == "classifier" else "cosine",
            TAG_PROVIDERS: ",".join(v.providers)}


def compare(new: VariantReport, current: dict[str, str] | None, margin: float,
            max_regression: float = MAX_REGRESSION) -> dict[str, Any]:
    """The regression gate: does ``new`` beat the current class champion (its version tags)? Returns the figures
    and why. Accuracy is compared only when both were measured on a labelled sample."""
    new_tp = new.throughput_per_s
    new_q = new.agreement if new.task == "classifier" else new.cosine
    if current is None:
        return {"beats": True, "why": "first version for this hardware class", "new_throughput": new_tp}
    old_tp, old_q = _float(current.get(TAG_THROUGHPUT)), _float(current.get(TAG_QUALITY))
    new_acc, old_acc = new.accuracy, _float(current.get(TAG_ACCURACY))
    facts = {"new_throughput": new_tp, "champion_throughput": old_tp, "new_quality": new_q, "champion_quality": old_q,
             "new_accuracy": new_acc, "champion_accuracy": old_acc, "max_regression": max_regression,
             "champion_version": current.get("version"), "margin": margin}
    if new_tp is None:
        return {**facts, "beats": False, "why": "no throughput measured (optimize disabled, or a variant picked by "
                "recipe): nothing to compare with the champion"}
    if new_acc is not None and old_acc is not None and (old_acc - new_acc) * 100 > max_regression:
        return {**facts, "beats": False, "why": f"accuracy regressed: {new_acc:.2%} vs champion {old_acc:.2%} "
                f"(more than optimize.max_regression {max_regression} points)"}
    if old_tp is None or new_tp >= old_tp * (1 + margin):
        accuracy = "" if new_acc is None or old_acc is None else f", accuracy {new_acc:.2%} vs {old_acc:.2%}"
        return {**facts, "beats": True, "why": f"faster: {new_tp:.1f}/s vs {old_tp or 0:.1f}/s (needs +{margin:.0%})"
                f"{accuracy}"}
    return {**facts, "beats": False,
            "why": f"not better: {new_tp:.1f}/s vs champion {old_tp:.1f}/s (needs +{margin:.0%}), "
                   f"quality {new_q} vs {old_q}"}


def _current(client, registered: str, alias: str) -> dict[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(registered, alias)
    except MlflowException:
        return None  # no champion for this hardware class yet
    return {**mv.tags, "version": str(mv.version)}


def _version_of(client, registered: str, alias: str) -> str | None:
    current = _current(client, registered, alias)
    return current["version"] if current else None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "None") else None
    except ValueError:
        return None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "unknown"


def registry_name(model_name: str) -> str:
    """The model's name as a registry name: a file path becomes its stem (``/x/my.onnx`` -> ``my``)."""
    name = re.split(r"[\\/]", model_name.rstrip("/\\"))[-1]
    name = name[:-5] if name.endswith(".onnx") else name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name) or "model"
