"""Creating ONNX Runtime sessions the same way in every stage, and catching a silent fallback to CPU."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ProviderFallback(RuntimeError):
    """The session did not get an execution provider it asked for (e.g. CUDA libraries missing)."""


@dataclass(frozen=True)
class Session:
    session: object  # onnxruntime.InferenceSession
    requested: tuple[str, ...]
    actual: tuple[str, ...]

    @property
    def fell_back(self) -> bool:
        return bool(set(self.requested) - set(self.actual))

    @property
    def io_binding(self) -> bool:
        """Runs go through IO binding when CUDA is the session's first provider (see ``run_bound``)."""
        return self.actual[:1] == (CUDA_EP,)

    def run(self, feeds: dict, names: list[str] | None = None) -> list:
        """The outputs ``names`` (None: all) for ``feeds``; through IO binding on CUDA, a plain run elsewhere."""
        if self.io_binding:
            return run_bound(self.session, feeds, names)
        return self.session.run(names, feeds)


def run_bound(session, feeds: dict, names: list[str] | None = None) -> list:
    """One run through IO binding: each input copied to the GPU once, the outputs written on the GPU and copied
    back together at the end (a plain run stages both through host buffers). For CUDA sessions only."""
    import numpy as np

    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, np.ascontiguousarray(value))
    for name in names or [o.name for o in session.get_outputs()]:
        binding.bind_output(name, "cuda", 0)  # device 0 of what CUDA_VISIBLE_DEVICES leaves visible
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


# ORT's SkipLayerNormalization CPU kernel is slower than the Add + LayerNormalization it replaces: measured on a
# 2-core AVX2 CPU, minilm int8 ran 12 % faster (fp32 7 %) with the fusion off. CUDA keeps it (one fused kernel).
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
CUDA_EP = "CUDAExecutionProvider"


def disabled_optimizers(providers) -> list[str]:
    """ORT graph optimizers to switch off for these providers (see CPU_DISABLED_OPTIMIZERS)."""
    return [] if CUDA_EP in providers else list(CPU_DISABLED_OPTIMIZERS)


def open_session(path: Path | str, providers: tuple[str, ...] = ("CPUExecutionProvider",), intra_op_threads: int = 0,
                 inter_op_threads: int = 1, on_fallback: str = "warn", optimized: bool = False,
                 spin: bool = True) -> Session:
    """An InferenceSession on ``providers`` (in order); ``on_fallback='fail'`` raises ProviderFallback.

    ``optimized=True`` means the file was already optimized offline: skip graph optimization at session start.
    ``spin=False`` lets ORT's idle threads sleep instead of spinning: for a server, whose Python work between runs
    (parsing, decoding, JSON) needs the cores the spinning threads would hold.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # ORT's warnings about unused initializers are noise for users
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    available = set(ort.get_available_providers())
    requested = tuple(p for p in providers if p in available) or ("CPUExecutionProvider",)
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=list(requested),
                                disabled_optimizers=None if optimized else disabled_optimizers(requested))
    handle = Session(sess, tuple(providers), tuple(sess.get_providers()))
    if handle.fell_back:
        message = (f"ONNX Runtime gave {list(handle.actual)} for requested {list(providers)}: "
                   "the missing providers fell back to CPU (check CUDA libraries, or request CPUExecutionProvider)")
        if on_fallback == "fail":
            raise ProviderFallback(message)
        log.warning(message)
    return handle


def saved_optimized_for(path: Path | str, providers: tuple[str, ...]) -> bool:
    """True when the recipe beside ``path`` says the graph was optimized offline for exactly these providers.

    Such a file is opened with graph optimization off (no re-optimization at every session start). On other
    providers (a GPU worker given a CPU-optimized file) ORT optimizes it again: the saved layout is provider-specific.
    """
    recipe_path = Path(path).with_suffix(".json")
    try:
        recipe = json.loads(recipe_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    graph = recipe.get("graph_optimization") or {}
    return bool(graph.get("saved_offline")) and list(graph.get("optimized_for_providers") or []) == list(providers)
