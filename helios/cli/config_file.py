"""Reading a run's settings: a YAML/TOML/JSON file, CLI flag values and ``--set`` overrides into a PipelineConfig."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flows.config import PipelineConfig
from helios.errors import UsageError

MOVED = {"prepare.allow_pickle": "model.allow_pickle", "infer.max_image_pixels": "model.max_image_pixels"}


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
    if error["type"] == "extra_forbidden" and path in MOVED:
        return f"setting {path!r} moved to {MOVED[path]!r}: use --set {MOVED[path]}=..."
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
