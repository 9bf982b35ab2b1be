"""The prepare stage: export to ONNX (or take the user's ONNX file) and gate it on the user's own files."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helios.models.base import Decoded, ModelAdapter
from helios.samples import decode_files, order_for_batching
from tasks.prepare.config import PrepareConfig
from tasks.prepare.export import export_onnx, write_recipe
from tasks.prepare.parity import ParityError, check_parity, measure_parity
from tasks.session import open_session


@dataclass(frozen=True)
class PreparedModel:
    onnx_path: Path
    exported: bool
    parity: dict = field(default_factory=dict)


def load_sample(adapter: ModelAdapter, paths: list[Path], limit: int) -> list[Decoded]:
    """Decode up to ``limit`` usable files; unusable ones are skipped here (the infer stage reports them)."""
    return [item for _, item in decode_files(adapter, paths, limit)]


def batches_of(adapter: ModelAdapter, items: list[Decoded], size: int = 16) -> list[dict[str, np.ndarray]]:
    """Batches of ``size``; text sorted by length first (unsorted, every batch of 16 was padded to its longest text:
    minilm's 64-text parity check took 16 s on 2 cores, most of it padding)."""
    items = [items[i] for i in order_for_batching(adapter, items)]
    return [adapter.collate(items[i:i + size]) for i in range(0, len(items), size)]


def prepare_model(cfg: PrepareConfig, adapter: ModelAdapter, sample_paths: list[Path], out_dir: Path,
                  providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0) -> PreparedModel:
    """Export (or copy the user's ONNX file), then run it on real inputs; raises ParityError on disagreement."""
    items = load_sample(adapter, sample_paths, cfg.parity_samples)
    feeds = batches_of(adapter, items) if items else [adapter.example_inputs()]
    if adapter.onnx_path is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.onnx"
        shutil.copyfile(adapter.onnx_path, path)
        write_recipe(path, {"variant": "user-onnx", "source": adapter.recipe})
        session = open_session(path, providers, threads)
        outputs = [session.run(f)[0] for f in feeds]
        if not all(np.isfinite(o).all() and o.shape[-1] == len(adapter.labels) for o in outputs):
            raise ParityError(f"{adapter.onnx_path} produced non-finite outputs or a width other than "
                              f"{len(adapter.labels)} labels on real inputs: check the model and model.labels")
        return PreparedModel(path, exported=False, parity={"samples": sum(len(o) for o in outputs), "validated": True})
    module = adapter.torch_module()  # built once (seconds for a transformer): exported, then compared against
    path = export_onnx(adapter, out_dir, cfg.opset, module)
    parity = measure_parity(adapter, open_session(path, ("CPUExecutionProvider",), threads), feeds, module)
    check_parity(parity, cfg, adapter.task)
    return PreparedModel(path, exported=True, parity=parity.to_dict())
