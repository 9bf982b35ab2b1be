"""PipelineConfig: the one typed config of a Helios run, and its loading from files and ``--set`` overrides."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from helios.errors import UsageError
from tasks.base import StageConfig
from tasks.infer.config import InferConfig
from tasks.optimize.config import OptimizeConfig
from tasks.prepare.config import PrepareConfig
from tasks.refine.config import RefineConfig
from tasks.report.config import ReportConfig
from tasks.review.config import ReviewConfig


class ModelConfig(StageConfig):
    """Which model: a built-in name, an ONNX file, ``module:factory`` (+ checkpoint) or a Hugging Face directory."""

    name: str = "mnist-cnn"
    checkpoint: str | None = Field(None, description="Weights for a module:factory model.")
    modality: str | None = Field(None, description="image | text, for user models.")
    labels: tuple[str, ...] | None = Field(None, description="Class names for user classifiers.")
    label_descriptions: dict[str, str] | None = Field(
        None, description="Text zero-shot: label -> description embedded and compared with each file."
    )
    image_size: tuple[int, int] | None = Field(None, description="(height, width) for user image models.")
    channels: int | None = Field(None, description="1 or 3 input channels for user image models.")
    mean: tuple[float, ...] | None = Field(
        None, description="User image models: per-channel mean subtracted after scaling pixels to [0, 1], "
                          "e.g. ImageNet [0.485, 0.456, 0.406]; one value for every channel, or one per channel.")
    std: tuple[float, ...] | None = Field(
        None, description="User image models: per-channel std the centred pixels are divided by, e.g. ImageNet "
                          "[0.229, 0.224, 0.225]; default 1.")

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (not value or any(v <= 0 for v in value)):
            raise ValueError(f"std {list(value)} must be positive numbers, e.g. [0.229, 0.224, 0.225]")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        """``--set model.labels=[0,1,2]`` parses as numbers; class names are text."""
        if isinstance(value, (list, tuple)):
            return tuple(v if isinstance(v, str) else str(v) for v in value)
        return value


class DemoConfig(StageConfig):
    kind: str = "mnist"
    n: int = Field(2000, ge=10)
    corrupt: tuple[str, ...] = ("shot_noise", "motion_blur", "rotate", "translate", "fog")
    seed: int = 0


class TrackingConfig(StageConfig):
    mlflow_uri: str | None = Field(None, description="None: sqlite store under the work directory.")
    experiment: str = "helios"
    enabled: bool = True


class PipelineConfig(BaseModel):
    """Everything a run needs; each stage receives only its own part."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    input: str | None = Field(None, description="Input directory or fsspec URL; None: generate the demo corpus.")
    out: str = Field("helios-work/run", description="Run directory (reused to resume).")
    labels: str | None = Field(None, description="CSV with path,label columns to report accuracy.")
    model: ModelConfig = ModelConfig()
    demo: DemoConfig = DemoConfig()
    prepare: PrepareConfig = PrepareConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    infer: InferConfig = InferConfig()
    refine: RefineConfig = RefineConfig()
    review: ReviewConfig = ReviewConfig()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()


def read_config_file(path: Path) -> dict[str, Any]:
    """Read YAML, TOML or JSON into a dict; errors name the file and the fix."""
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist: pass an existing YAML, TOML or JSON file to --config")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UsageError(f"config file {path} has suffix {suffix!r}: use .yaml, .yml, .toml or .json")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid {suffix[1:].upper()}: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as YAML (numbers, booleans, lists)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {assignment!r} is not of the form dotted.key=value, e.g. --set infer.batch_size=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _describe(error: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"unknown setting {path!r}: remove it or check the spelling"
    if error["type"] == "literal_error":
        return f"{path}={error.get('input')!r} is not allowed: expected {error['ctx']['expected']}"
    return f"{path}={error.get('input')!r}: {error['msg']}"


def build_config(data: dict[str, Any]) -> PipelineConfig:
    """Validate a settings mapping into a PipelineConfig, or raise a UsageError naming each bad field."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise UsageError(f"invalid config: {problems}") from exc


def load_config(path: Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None) -> PipelineConfig:
    """Config from an optional file, then CLI flag values (``base``), then ``--set`` overrides, in that order."""
    data: dict[str, Any] = read_config_file(path) if path else {}
    for key, value in (base or {}).items():
        if value is not None:
            apply_override(data, f"{key}={json.dumps(value)}")
    for assignment in overrides or []:
        apply_override(data, assignment)
    return build_config(data)
