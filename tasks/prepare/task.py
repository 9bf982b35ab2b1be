"""Prefect wrapper of the prepare stage (export + parity gate). No retries: a failing gate is deterministic."""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from helios.models.base import ModelAdapter
from tasks.prepare.config import PrepareConfig
from tasks.prepare.core import PreparedModel, prepare_model


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_stage(cfg: PrepareConfig, adapter: ModelAdapter, sample_paths: list[Path], out_dir: Path,
                  providers: tuple[str, ...], threads: int) -> PreparedModel:
    return prepare_model(cfg, adapter, sample_paths, out_dir, providers, threads)
