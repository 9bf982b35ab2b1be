"""Re-inference for the refine stage through the infer machinery: an adapted model answers files as the infer stage
does, with shards, durable shard files, the single-writer index and the cache.

Each call writes the manifest rows of the files asked for into ``RUN_DIR/refine-infer/manifest.parquet`` and runs
the infer subflow there with a ModelRef of the adapted ONNX file: its identity is the file's hash and the recipe, so
an unchanged rerun gets every answer back from that index, and a run killed mid-way resumes from its committed
shards. The refine core (``tasks.refine``) knows none of this: it calls ``RefineContext.reinfer``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.dispatch import run_infer_stage
from flows.infer import with_outputs
from helios.catalog import RunCatalog
from helios.files import atomic_path
from helios.heap import trim_heap
from helios.models import ModelConfig
from tasks.infer.config import InferConfig
from tasks.infer.engine import release_engines
from tasks.infer.index import RunIndex
from tasks.infer.model_ref import make_model_ref
from tasks.infer.plan import load_reusable
from tasks.infer.scan import read_manifest
from tasks.refine.context import RefineContext

log = logging.getLogger(__name__)

ADAPTED = "test-time-adapted"  # the variant name in the adapted models' identity


def write_subset(manifest: Path, paths: Sequence[str] | pa.Array, out: Path) -> Path:
    """The rows of ``manifest`` whose path is in ``paths`` (schema and input root kept), written atomically to
    ``out``, row group by row group."""
    source = pq.ParquetFile(manifest)
    wanted = paths if isinstance(paths, pa.Array) else pa.array(list(paths), pa.string())
    wanted = wanted.cast(source.schema_arrow.field("path").type)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, source.schema_arrow) as writer:
        for group in range(source.num_row_groups):
            part = source.read_row_group(group)
            writer.write_table(part.filter(pc.is_in(part["path"], value_set=wanted)))
    return out


def share_rows(catalog: RunCatalog, target: RunCatalog) -> None:
    """Table input: the scan's copies of the tables' items, seen from the refine run directory too."""
    if catalog.rows.is_dir() and not target.rows.exists():
        target.run_dir.mkdir(parents=True, exist_ok=True)
        os.symlink(catalog.rows, target.rows, target_is_directory=True)


@dataclass(frozen=True)
class AdaptedInfer:
    """``RefineContext.reinfer`` for a pipeline run: (adapted ONNX file, relative paths as an Arrow string array) ->
    path, status, label, confidence of those files (an Arrow table, or a frame when the index answered them all),
    from the infer subflow run in ``run_dir`` (always on this machine's pool)."""

    cfg: InferConfig
    model: ModelConfig
    manifest: str
    run_dir: str
    profile: dict
    batch_size: int | None
    providers: tuple[str, ...]
    threads: int

    def __call__(self, onnx_path: Path, paths: pa.Array, vectors: bool = False) -> pa.Table | pd.DataFrame:
        """``vectors``: the model's ``embeddings`` output too, as the ``embedding`` column (a routed graph,
        ``tasks.refine.routed``); always a table then."""
        target = RunCatalog(Path(self.run_dir))
        share_rows(RunCatalog(Path(self.manifest).parent), target)
        subset = write_subset(Path(self.manifest), paths, target.manifest)
        ref = make_model_ref(self.model, onnx_path, ADAPTED, self.providers, self.threads)
        known = None if self.cfg.full or vectors else cached_answers(subset, ref.identity, target.run_dir)
        if known is not None:
            log.info("refine: %d files answered from the index of %s (%s)", len(known), target.run_dir, ref.identity[:12])
            return known
        cfg = self.cfg.model_copy(update={"outputs": ("label", "embeddings")}) if vectors else self.cfg
        try:
            result = run_infer_stage(cfg, ref, str(subset), self.run_dir, self.profile, self.batch_size)
        finally:
            # an adapted model answers once: its session, and ONNX Runtime's memory for its largest batches, go
            # (under the identity the engines were opened with, which names the outputs asked for)
            release_engines(with_outputs(ref, cfg).identity)
            trim_heap()
        columns = ["path", "status", *(["embedding"] if vectors else ["label", "confidence"])]
        return pq.read_table(result.predictions_path, columns=columns)


def cached_answers(manifest: Path, identity: str, run_dir: Path) -> pd.DataFrame | None:
    """Every file of ``manifest`` answered from the index of ``run_dir`` for this model identity, or None when
    any is missing (then the infer subflow runs; it reuses what is there). Saves a flow run on an unchanged rerun."""
    table, _ = read_manifest(manifest, columns=["path", "content_hash", "scan_error"])
    if table.num_rows == 0 or table["scan_error"].null_count != table.num_rows:
        return None
    index = RunIndex(run_dir)
    try:
        reusable = load_reusable(index, identity, run_dir)
    finally:
        index.close()
    if not pc.all(pc.is_in(table["content_hash"], value_set=reusable["content_hash"])).as_py():
        return None
    frame = table.select(["path", "content_hash"]).to_pandas()
    answers = reusable.select(["content_hash", "status", "label", "confidence"]).to_pandas()
    return frame.merge(answers, on="content_hash", how="left").drop(columns="content_hash")


def refine_context(run, onnx_path: Path, providers: tuple[str, ...], rec, profile) -> RefineContext:
    """The refine stage's context for an open pipeline run (``flows.pipeline.OpenRun``): ``onnx_path`` (the selected
    variant, run with ``providers``) is the source; adapted models re-infer through ``AdaptedInfer`` in
    ``RUN_DIR/refine-infer``, on this machine. ``--full`` (``infer.full``) adapts again too."""
    config, catalog = run.config, run.catalog
    release_engines()  # the infer stage is done: its sessions (ONNX Runtime keeps its largest batch's memory) go
    cfg = config.refine
    if config.infer.full:
        cfg = cfg.model_copy(update={"reuse_adaptation": False})
    # the infer stage's own metrics are not this pass's; its outputs are labels only
    infer_cfg = config.infer.model_copy(update={"pool": "local", "metrics_port": None, "pushgateway": None,
                                                "outputs": ("label",)})
    reinfer = AdaptedInfer(infer_cfg, run.model, str(catalog.manifest), str(catalog.refine_infer), profile.to_dict(),
                           rec.batch_size, tuple(providers), rec.intra_op_threads)
    return RefineContext(cfg, run.adapter, Path(onnx_path), catalog.refine_dir, tuple(providers),
                         rec.intra_op_threads, reinfer)
