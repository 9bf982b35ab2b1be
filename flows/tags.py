"""The MLflow tag and metric names Helios writes; ``helios compare`` and the registry code read the same names."""
from __future__ import annotations

TAG_MODEL = "helios.model"
TAG_VARIANT = "helios.variant"
TAG_HARDWARE_CLASS = "helios.hardware_class"
TAG_COMMAND = "helios.command"
TAG_ERROR = "helios.error"  # why a FAILED run failed
TAG_FLOW_RUN_ID = "prefect.flow_run_id"
TAG_FLOW_RUN_URL = "prefect.flow_run_url"
TAG_RUN_NAME = "mlflow.runName"
TAG_PARENT_RUN = "mlflow.parentRunId"
RUN_TAGS = (TAG_MODEL, TAG_VARIANT, TAG_HARDWARE_CLASS, TAG_FLOW_RUN_ID, TAG_FLOW_RUN_URL)

# on a variant's nested run and on registered model versions
TAG_SELECTED = "helios.selected"
TAG_REASON = "helios.reason"
TAG_RUN_ID = "helios.run_id"
TAG_THROUGHPUT = "helios.throughput_per_s"
TAG_QUALITY = "helios.quality"
TAG_QUALITY_METRIC = "helios.quality_metric"
TAG_PROVIDERS = "helios.providers"
TAG_CHAMPION_COMPARISON = "helios.champion_comparison"
TAG_SOURCE_KEY = "helios.source_key"  # which model and settings a version was optimized from (flows/reuse.py)
# the served model's card on its registered version (flows/serving_model.py)
TAG_LABELS = "helios.labels"
TAG_TASK = "helios.task"
TAG_MODALITY = "helios.modality"
TAG_ACCURACY = "helios.accuracy"
TAG_PARITY = "helios.parity"
TAG_INPUT = "helios.input"

METRIC_THROUGHPUT = "throughput_files_per_s"
METRIC_ACCURACY = "accuracy_final"
METRIC_LLM_COST = "llm_cost_usd"
METRIC_RUN_COST = "run_cost_usd"  # compute + LLM
METRIC_COMPUTE_COST = "compute_cost_usd"  # tracking.hourly_usd x wall time
METRIC_COST_PER_1K = "cost_per_1k_files_usd"  # compute + LLM per 1,000 files


def make_run_tags(model: str, variant: str | None, hardware_class: str | None, flow_run_id: str | None = None,
                  flow_run_url: str | None = None) -> dict[str, str]:
    """The tags a Helios MLflow run carries; values left out when unknown."""
    values = (model, variant, hardware_class, flow_run_id, flow_run_url)
    return {tag: str(value) for tag, value in zip(RUN_TAGS, values) if value is not None}


# on the experiment: MLflow 3's UI opens a "Machine learning" experiment on its runs table (a GenAI one on traces)
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
TAG_NOTE = "mlflow.note.content"  # the description the UI shows above the runs
# on a run: the UI's Source column
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
