"""Prefect wrapper of the detect stage: the one place the pipeline probes the machine."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from hardware import HardwareProfile, Recommendation, detect, recommend


@task(name="detect", cache_policy=NO_CACHE)
def detect_stage(input_root: str, io_probe_seconds: float = 1.0) -> tuple[HardwareProfile, Recommendation]:
    profile = detect(input_root, io_probe_seconds=io_probe_seconds)
    return profile, recommend(profile)
