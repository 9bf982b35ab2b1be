"""int8 variants: dynamic (settings from the CPU's ISA) and static QDQ calibrated on the user's own files.

Both keep the output head — the last weight layer feeding each graph output, when it holds at most 2 % of the
weights — in fp32: it is a tiny share of the compute, and its error lands straight in the logits. A large last
layer (a sentence embedder's final encoder dense, 5.6 % of minilm's weights; keeping it fp32 cost 10 % throughput
for no measured cosine gain) is quantized like the rest; the quality budget and the retry below still protect it.
When a dynamic model misses the quality budget, ``rank_sensitive`` orders the remaining MatMuls by their measured quantization error on the sample, so the stage
can retry with the worst ones kept in fp32.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class _DropOrtRootWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def quiet_quantizer():
    """ORT's quantizer warns through the root logger (and, with no handler there, installs one). Its warnings
    ("consider pre-processing", "failed to infer the type of tensor" on contrib ops) are expected here: keep
    them out of the user's console, without touching other loggers."""
    root, handler, filt = logging.getLogger(), logging.NullHandler(), _DropOrtRootWarnings()
    root.addHandler(handler)
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)
        root.removeHandler(handler)


def weight_nodes(model) -> list:
    """Nodes whose second input is a constant weight (the ones int8 quantization speeds up)."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits]


def head_nodes(model, max_share: float = 0.02) -> list[str]:
    """For each graph output, the last weight node (in topological order) among its ancestors, when its weight
    holds at most ``max_share`` of all weight nodes' weights (a head, not a full-width layer)."""
    producer = {out: n for n in model.graph.node for out in n.output}
    dims = {i.name: i.dims for i in model.graph.initializer}
    sizes = {n.name: int(np.prod(dims[n.input[1]])) for n in weight_nodes(model)}
    weights, total = set(sizes), sum(sizes.values()) or 1
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    heads = set()
    for output in model.graph.output:
        seen, stack, found = set(), [output.name], []
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.name in weights:
                found.append(node.name)
            stack.extend(node.input)
        if found:
            last = max(found, key=order.__getitem__)
            if sizes[last] <= max_share * total:
                heads.add(last)
    return sorted(heads)


def quantize_dynamic_model(source: Path, dst: Path, settings: dict, op_types: tuple[str, ...] | None,
                           exclude: list[str]) -> dict:
    """int8 weights, uint8 activations quantized at run time; returns the recipe."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    extra = {"DefaultTensorType": 1, **settings.get("extra_options", {})}  # 1 = FLOAT, for contrib-op outputs
    with quiet_quantizer():
        quantize_dynamic(str(source), str(dst), weight_type=QuantType[settings.get("weight_type", "QInt8")],
                         per_channel=settings.get("per_channel", True),
                         reduce_range=settings.get("reduce_range", False),
                         op_types_to_quantize=list(op_types) if op_types else None, nodes_to_exclude=exclude,
                         extra_options=extra)
    return {"quantization": {"mode": "dynamic", "format": "QOperator", "source": source.name,
                             "settings": {**settings, "extra_options": extra}, "op_types": op_types or "all supported",
                             "nodes_excluded": exclude, "activations": "QUInt8 (dynamic, per tensor)"}}


class FeedReader:
    """``CalibrationDataReader`` over a list of feeds (batches collated from the user's own files)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._iter = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


@contextlib.contextmanager
def _cwd(path: str):
    """Run a library call that writes debug files into the working directory inside ``path`` instead.

    The optimize stage runs alone in its process (no concurrent task depends on the working directory then).
    """
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def quantize_static_model(source: Path, dst: Path, feeds: list[dict[str, np.ndarray]], method: str, settings: dict,
                          op_types: tuple[str, ...] | None, exclude: list[str], percentile: float) -> dict:
    """QDQ int8 weights and activations, activation ranges calibrated on ``feeds``; returns the recipe."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = Path(source).resolve()  # before the chdir below: a relative path would resolve in the temp dir
    with tempfile.TemporaryDirectory() as tmp, quiet_quantizer():
        pre = Path(tmp) / "pre.onnx"
        try:
            with _cwd(tmp):  # on failure ORT's symbolic shape inference dumps sym_shape_infer_temp.onnx into the CWD
                quant_pre_process(str(source), str(pre), skip_symbolic_shape=False)
            prepared, note = pre, "quant_pre_process (symbolic shape inference + ORT basic optimization)"
        except Exception as exc:  # symbolic inference gives up on some contrib-op graphs: ONNX shape inference only
            try:
                quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
                prepared, note = pre, (f"quant_pre_process without symbolic shape inference ({type(exc).__name__}: "
                                       f"{str(exc)[:120]})")
            except Exception as again:  # quantize the source as is
                prepared, note = source, f"quant_pre_process skipped: {type(again).__name__}: {str(again)[:200]}"
        extra = {"CalibPercentile": percentile} if method == "percentile" else {}
        quantize_static(str(prepared), str(dst), FeedReader(feeds), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType[settings.get("weight_type", "QInt8")],
                        per_channel=settings.get("per_channel", True), reduce_range=settings.get("reduce_range", False),
                        calibrate_method=getattr(CalibrationMethod, CALIBRATION[method]),
                        op_types_to_quantize=list(op_types) if op_types else None, nodes_to_exclude=exclude,
                        extra_options=extra)
    return {"quantization": {"mode": "static", "format": "QDQ", "source": source.name, "pre_process": note,
                             "calibration": {"method": CALIBRATION[method], "batches": len(feeds),
                                             "items": int(sum(len(next(iter(f.values()))) for f in feeds)),
                                             **extra},
                             "settings": settings, "op_types": op_types or "all supported", "nodes_excluded": exclude,
                             "activations": "QUInt8 (static, per tensor)"}}


def rank_sensitive(source: Path, feeds: list[dict[str, np.ndarray]], settings: dict, candidates: list[str]) -> list[str]:
    """MatMul names ordered worst first by relative output error of (int8 activations x int8 weights) vs fp32.

    Error is simulated in numpy with the same scheme as dynamic quantization (uint8 per-tensor activations,
    int8 weights per channel or per tensor, 7-bit with reduce_range), on the activations the sample produces.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in weight_nodes(model) if n.op_type == "MatMul" and n.name in candidates]
    known = {o.name for o in model.graph.output}
    for name in {n.input[0] for n in nodes} - known:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    errors: dict[str, list[float]] = {n.name: [] for n in nodes}
    for feed in feeds:
        acts = dict(zip([n.input[0] for n in nodes], session.run([n.input[0] for n in nodes], feed)))
        for node in nodes:
            x = acts[node.input[0]].reshape(-1, acts[node.input[0]].shape[-1])
            w = numpy_helper.to_array(inits[node.input[1]])
            ref = x @ w
            got = _fake_quant_activations(x) @ _fake_quant_weights(w, settings)
            errors[node.name].append(float(np.linalg.norm(got - ref) / (np.linalg.norm(ref) + 1e-12)))
    return sorted(errors, key=lambda k: -float(np.mean(errors[k])))


def _fake_quant_activations(x: np.ndarray) -> np.ndarray:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255 or 1.0
    zero = np.round(-lo / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def _fake_quant_weights(w: np.ndarray, settings: dict) -> np.ndarray:
    qmax = 63 if settings.get("reduce_range") else 127
    per_channel = settings.get("per_channel", True)
    amax = np.abs(w).max(axis=0, keepdims=True) if per_channel else np.abs(w).max()
    scale = np.where(amax > 0, amax / qmax, 1.0)
    return np.clip(np.round(w / scale), -qmax, qmax) * scale
