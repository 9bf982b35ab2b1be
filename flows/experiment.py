"""The MLflow experiment Helios logs to, set up so MLflow 3's UI opens it on its runs table with a description.

MLflow 3 shows an experiment by its kind (the ``mlflow.experimentKind`` tag): a GenAI one opens on traces, a machine
learning one on its runs. Without the tag the UI guesses, and with traces in the experiment (the LLM review's) it
guesses GenAI. Helios sets the kind on every run, so an experiment made by an older Helios, or re-kinded by the
UI's guess, comes right on the next run; a description is added only where there is none.
"""
from __future__ import annotations

from typing import Any

from flows.tags import EXPERIMENT_KIND, TAG_EXPERIMENT_KIND, TAG_NOTE

DESCRIPTION = (
    "Helios pipeline runs. One run per `helios run`: detect hardware → prepare (ONNX export) → optimize → infer → "
    "refine (test-time adaptation) → LLM review → report. Each run holds the config as params, metrics per stage "
    "(files, throughput, accuracy, LLM cost), system metrics, the files it read as datasets (Dataset column), the "
    "report and predictions as artifacts, and the model variants as nested runs. The LLM review's requests are "
    "traces linked to their run (Traces tab: tokens, cost, latency, verdict). Runs of `helios optimize` carry the "
    "tag helios.command=optimize."
)


def ensure_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created when missing; its kind set, and its description when it has none."""
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND, TAG_NOTE: DESCRIPTION})
    if found.tags.get(TAG_EXPERIMENT_KIND) != EXPERIMENT_KIND:
        client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
    if not found.tags.get(TAG_NOTE):
        client.set_experiment_tag(found.experiment_id, TAG_NOTE, DESCRIPTION)
    return found.experiment_id


def runs_page_url(tracking_uri: str, run_id: str) -> str | None:
    """The address that opens the run's experiment on its runs table: the server's own, or ``mlflow ui``'s default
    for a local store. MLflow 3.17's UI opens an experiment in the browser's last mode, GenAI (the traces overview)
    by default, whatever the experiment's kind, unless the address names the mode. None when the URI is masked."""
    if "***" in tracking_uri:
        return None
    from mlflow import MlflowClient

    experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
    base = tracking_uri if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
