"""The GPU deployment's flow: on the GPU worker, build the model for that worker's hardware, then infer with it.

With ``infer.pool=gpu`` the pipeline (on a CPU worker) builds nothing itself. It sends a ModelBuild: the model,
prepare and optimize settings, the sample files and their labels (on the volume every worker mounts, like the
manifest), the folder to write the variants into and the registry to look for a champion in. This flow detects the
worker's own hardware; reuses the champion of the worker's class (``champion-<class>``) when it was optimized from
the same model and settings, else runs prepare and optimize for that profile (fp16 and CUDA-EP variants only when it
has a GPU with the CUDA EP); then infers with the variant it selected, on the providers of its own recommendation.
What the pipeline reports and registers comes back as a GpuStagesResult, persisted like any result of this
deployment (the ``helios-results`` block on the shared volume).

A pipeline given a registered version (``--model models:/...``) sends that version's ModelRef instead, and this flow
only infers it. The flow keeps the name ``helios-infer``, so the deployment is still ``helios-infer/helios-infer-gpu``.
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow
from pydantic import BaseModel, ConfigDict

from flows.deployments import check_deployment_parameters, running_deployment_id
from flows.infer import infer_flow
from flows.optimize import optimize_in_run
from flows.reuse import class_champion
from flows.runners import make_task_runner
from hardware import detect, recommend
from helios.catalog import RunCatalog
from helios.errors import UsageError
from helios.models import BUILT_IN, ModelConfig, load_model
from tasks.infer.config import InferConfig
from tasks.infer.model_ref import ModelRef, make_model_ref
from tasks.infer.result import InferResult
from tasks.optimize.config import OptimizeConfig
from tasks.prepare.config import PrepareConfig
from tasks.prepare.task import prepare_stage


class ModelBuild(BaseModel):
    """What the GPU worker needs to prepare and optimize the model itself (a JSON deployment parameter)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelConfig
    prepare: PrepareConfig
    optimize: OptimizeConfig
    sample: tuple[str, ...]  # absolute paths of the files prepare and optimize measure on
    truth: dict[str, str] | None = None  # the sample's labels, keyed by path relative to the input root
    model_dir: str  # where the variants go: the run directory's model-gpu folder
    tracking_uri: str | None = None  # the registry to look for the worker class's champion in; None: never reuse
    source_key: str | None = None  # what a reusable champion must have been optimized from (flows/reuse.py)


class GpuStagesResult(BaseModel):
    """What the GPU run gives back (JSON): the InferResult and, when it built the model, what the report and MLflow
    need about that (the worker's hardware, the prepare and optimize results, the champion it reused)."""

    infer: InferResult
    hardware: dict  # the worker's HardwareProfile.to_dict()
    recommendation: dict
    stages: dict[str, float] = {}  # seconds on the worker: detect, prepare, optimize, infer
    prepared: dict | None = None  # onnx_path, exported, parity
    optimized: dict | None = None  # OptimizeResult.to_dict()
    optimize_json: str | None = None  # where that was written
    reused: dict | None = None  # ReusedModel.describe() of the champion reused instead of optimizing

    @property
    def hardware_class(self) -> str:
        return self.hardware.get("hardware_class", "")


@flow(name="helios-infer")
def gpu_stages_flow(cfg: InferConfig, manifest_path: str, run_dir: str, build: ModelBuild | None = None,
                    model: ModelRef | None = None) -> GpuStagesResult:
    """On the GPU worker: detect, then prepare + optimize (``build``) or take the given variant (``model``), then
    infer the manifest into ``run_dir``. Parameters that would run code are refused unless this worker opted in."""
    if (build is None) == (model is None):
        raise UsageError("the helios-infer-gpu deployment takes either build (prepare and optimize on the worker) or "
                         "model (infer that variant), not both or neither: start it through infer.pool=gpu")
    check_deployment_parameters(build.model if build else model.model, running_deployment_id())
    start = time.perf_counter()
    profile = detect(io_probe_seconds=0)  # this worker's own hardware, not the pipeline's
    rec = recommend(profile)
    stages, built = {"detect": round(time.perf_counter() - start, 3)}, {}
    if build is not None:
        model, built, seconds = build_model(build, profile, rec, manifest_path, run_dir)
        stages.update(seconds)
    start = time.perf_counter()
    inferred = infer_flow.with_options(task_runner=make_task_runner(cfg))(cfg, model, manifest_path, run_dir,
                                                                         profile.to_dict())
    stages["infer"] = round(time.perf_counter() - start, 3)
    return GpuStagesResult(infer=inferred, hardware=profile.to_dict(), recommendation=rec.to_dict(), stages=stages,
                           **built)


def build_model(build: ModelBuild, profile, rec, manifest_path: str,
                run_dir: str) -> tuple[ModelRef, dict, dict[str, float]]:
    """The worker class's champion (when ``build.tracking_uri`` is set and it was optimized from
    ``build.source_key``), else prepare + optimize for ``profile``. Returns the selected variant's ModelRef on the
    recommendation's providers, the GpuStagesResult fields about it, and the seconds of prepare and optimize."""
    out, start = Path(build.model_dir), time.perf_counter()
    reused = None
    if build.tracking_uri and build.source_key:
        reused = class_champion(build.model.name, profile.hardware_class, build.tracking_uri, out, build.source_key)
    if reused is not None:
        prepared, optimized = reused.prepared(), reused.optimized(out, build.optimize.min_gain)
        seconds = {"prepare": 0.0, "optimize": round(time.perf_counter() - start, 3)}
    else:
        adapter, sample = load_model(build.model), [Path(p) for p in build.sample]
        prepared = prepare_stage(build.prepare, adapter, sample, out, rec.providers, rec.intra_op_threads)
        seconds = {"prepare": round(time.perf_counter() - start, 3)}
        optimized = optimize_in_run(build.optimize, adapter, prepared, sample, RunCatalog.at(run_dir), profile, rec,
                                    build.truth, Path(manifest_path), out)
        seconds["optimize"] = round(time.perf_counter() - start - seconds["prepare"], 3)
    chosen = optimized.selected
    ref = make_model_ref(build.model, chosen.path, chosen.name, tuple(rec.providers), rec.intra_op_threads)
    fields = {"optimized": optimized.to_dict(), "optimize_json": str(optimized.table_path),
              "prepared": {"onnx_path": str(prepared.onnx_path), "exported": prepared.exported,
                           "parity": prepared.parity},
              "reused": reused.describe() if reused else None}
    return ref, fields, seconds


def shared_model(model: ModelConfig) -> ModelConfig:
    """``model`` with a local model file, directory or checkpoint as an absolute path, so the GPU worker (its own
    working directory, the same shared volume) finds the same file."""
    pairs = (("name", model.name), ("checkpoint", model.checkpoint))
    update = {key: str(Path(value).resolve()) for key, value in pairs
              if value and value not in BUILT_IN and Path(value).exists()}
    return model.model_copy(update=update)
