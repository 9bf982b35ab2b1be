"""What every step of the refine stage needs to know about the run, as one frozen value."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from helios.models.base import ModelAdapter
from tasks.refine.config import RefineConfig


@dataclass(frozen=True)
class RefineContext:
    """The stage's settings and the model it refines: config, adapter, the ONNX file the infer stage ran, the folder
    for adapted models, and the ONNX Runtime providers and intra-op threads (also torch's while adapting; 0: default).

    ``device`` is where torch works (``ttt.torch_device`` resolves ``refine.device`` when the stage starts).
    ``reinfer`` (None: this process's ONNX session, chunk by chunk) is how an adapted model answers files: called
    with the adapted ONNX file and paths relative to the input root, it returns a frame with ``path``, ``status``,
    ``label`` and ``confidence`` (the pipeline runs the infer stage's shards, index and cache: ``flows.refine_infer``).
    """

    cfg: RefineConfig
    adapter: ModelAdapter
    onnx_path: Path
    work_dir: Path
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int = 0
    reinfer: Callable[[Path, Sequence[str]], object] | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "onnx_path", Path(self.onnx_path))
        object.__setattr__(self, "work_dir", Path(self.work_dir))
        object.__setattr__(self, "providers", tuple(self.providers))
