"""Sessions for the variants: providers from the recommendation, CUDA EP options, IO binding, fallback check.

CPU-only sessions go through the shared ``tasks.session.open_session``. A CUDA session needs provider options,
which that helper does not take, so it is built here and checked for a silent fallback the same way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.session import CUDA_EP, ProviderFallback, Session, disabled_optimizers, open_session, run_bound

log = logging.getLogger(__name__)

# HEURISTIC conv search starts fast (EXHAUSTIVE benchmarks every conv at the first run of each shape);
# kSameAsRequested keeps the arena from doubling past what the model needs; copies in the default stream
# keep IO-bound inputs ordered with the compute without extra synchronisation.
CUDA_OPTIONS = {"device_id": 0, "arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC",
                "do_copy_in_default_stream": True}


def ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception types: they derive from Exception, not RuntimeError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))


@dataclass(frozen=True)
class Runner:
    """A session plus how to feed it: plain ``run`` on CPU, IO binding with device outputs on CUDA."""

    handle: Session
    io_binding: bool

    @property
    def providers(self) -> tuple[str, ...]:
        return self.handle.actual

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not self.io_binding:
            return self.handle.session.run(None, feeds)
        return run_bound(self.handle.session, feeds)


def open_runner(path: Path, providers: tuple[str, ...], intra_op_threads: int, inter_op_threads: int = 1,
                on_fallback: str = "warn", optimized: bool = False) -> Runner:
    """A Runner on ``providers``; a missing provider raises ProviderFallback when ``on_fallback='fail'``."""
    if CUDA_EP not in providers:
        handle = open_session(path, providers, intra_op_threads, inter_op_threads, on_fallback, optimized)
        return Runner(handle, io_binding=False)
    handle = _open_cuda(path, providers, intra_op_threads, inter_op_threads, optimized)
    if handle.fell_back:
        message = (f"ONNX Runtime gave {list(handle.actual)} for requested {list(providers)} on {path.name}: "
                   "CUDA fell back to CPU (install onnxruntime-gpu matching the CUDA/cuDNN libraries, or request "
                   "CPUExecutionProvider)")
        if on_fallback == "fail":
            raise ProviderFallback(message)
        log.warning(message)
    return Runner(handle, io_binding=CUDA_EP in handle.actual)


def _open_cuda(path: Path, providers: tuple[str, ...], intra: int, inter: int, optimized: bool) -> Session:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = intra, inter, 3
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    available = set(ort.get_available_providers())
    spec = [(p, CUDA_OPTIONS) if p == CUDA_EP else p for p in providers if p in available] or ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=spec)
    return Session(sess, tuple(providers), tuple(sess.get_providers()))


def save_optimized(src: Path, dst: Path, providers: tuple[str, ...], threads: int) -> Path:
    """Write ``src`` after ORT_ENABLE_ALL graph optimization to ``dst`` (done once here, not at every session start).

    The saved graph is specific to the providers it was optimized for (CPU layout transforms such as NCHWc,
    fused contrib ops): the recipe records them, and sessions open it with optimization disabled.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(dst)
    opts.intra_op_num_threads, opts.log_severity_level = threads, 3
    available = set(ort.get_available_providers())
    spec = [(p, CUDA_OPTIONS) if p == CUDA_EP else p for p in providers if p in available] or ["CPUExecutionProvider"]
    try:
        ort.InferenceSession(str(src), sess_options=opts, providers=spec,
                             disabled_optimizers=disabled_optimizers(providers))
    except ort_errors() as exc:
        raise RuntimeError(f"ONNX Runtime could not optimize {src} for {spec}: {exc}") from exc
    return dst
