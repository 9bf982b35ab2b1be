"""Config of the scan-and-infer stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from helios.settings import StageConfig


class InferConfig(StageConfig):
    """What the scan-and-infer stage does; tasks/infer says how."""

    batch_size: int | None = Field(None, ge=1, description="None: taken from the hardware recommendation.")
    shard_size: int = Field(2000, ge=100, le=100_000, description="Files per shard (one Prefect task each).")
    prefetch_batches: int = Field(8, ge=1, description="Bounded prefetch queue depth (backpressure).")
    full: bool = Field(False, description="Reprocess every file, ignoring earlier results.")
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Larger files become error rows.")
    runner: Literal["local", "ray", "dask"] = "local"
    isolation: Literal["process", "thread"] = Field(
        "thread", description="Local runner: shards in threads of the flow process, or in worker processes (a "
                              "crashed worker costs one shard attempt, not the run; 7-46 % slower on 2 cores).")
    shard_retries: int = Field(2, ge=0, le=10, description="Retries of a failed shard before it becomes error rows.")
    runner_address: str | None = Field(None, description="Ray or Dask scheduler address; None starts a local one.")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve Prometheus metrics on 127.0.0.1.")
    pushgateway: str | None = Field(None, description="Push metrics to this Pushgateway URL at the end.")
    workers: int | None = Field(None, ge=1, description="Shards in flight at once (local threads, Ray/Dask workers).")
    progress: bool = Field(False, description="Show a rich progress bar (the CLI turns this on).")
    pool: Literal["local", "gpu"] = Field("local", description="gpu: prepare, optimize and infer on the "
                                                               "helios-infer-gpu deployment (its own hardware).")
    column: str | None = Field(None, description="Tables in the input (Parquet, CSV, JSONL): the column each row's "
                                                 "item is in (text, image bytes, or image paths relative to the table).")
    id_column: str | None = Field(None, description="Tables: a column of unique row ids (the rows' path); None: "
                                                    "file#row.")
    outputs: tuple[Literal["label", "probs", "topk", "embeddings"], ...] = Field(
        ("label",), min_length=1, description="Columns to write: label (always), probs (every class), topk "
                                              "(infer.top_k labels and probabilities), embeddings (pooled vector).")
    top_k: int = Field(5, ge=1, le=1000, description="Labels per row in the topk columns.")
