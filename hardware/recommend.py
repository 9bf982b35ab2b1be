"""`recommend()`: execution providers, precisions, threads, batch size and int8 settings for a profile.

Pure function of the profile, so every rule is testable with a hand-built profile. Each choice comes
with a one-sentence reason in `Recommendation.reasons`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hardware.profile import HardwareProfile

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"
_GIB = 2**30
# Initial batch sizes per GiB of free memory; the inference stage tunes from here. The GPU figure is
# higher because activations, not weights, dominate and GPU memory is not shared with the OS.
_CPU_BATCH_PER_GIB, _CPU_BATCH_MAX = 8, 64
_GPU_BATCH_PER_GIB, _GPU_BATCH_MAX = 16, 1024
_DEFAULT_BATCH = 32


@dataclass(frozen=True)
class Recommendation:
    """Starting settings for the optimize and infer stages, with a reason for each."""

    providers: tuple[str, ...]
    precisions: tuple[str, ...]
    intra_op_threads: int
    inter_op_threads: int
    batch_size: int
    int8_settings: dict[str, Any]
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recommendation:
        """Rebuild from `to_dict()` output."""
        return cls(**{**data, "providers": tuple(data["providers"]), "precisions": tuple(data["precisions"])})


def recommend(profile: HardwareProfile) -> Recommendation:
    """Derive execution providers, precisions, threads, batch size and ORT int8 settings from `profile`."""
    providers, providers_reason = _providers(profile)
    on_gpu = providers[0] == CUDA_EP
    precisions = ("fp32", "fp16") if on_gpu else ("fp32", "int8-dynamic", "int8-static")
    batch_size, batch_reason = _batch_size(profile, on_gpu)
    int8_settings, int8_reason = int8_settings_for(profile)
    threads = profile.cpu.effective_cores
    return Recommendation(
        providers=providers,
        precisions=precisions,
        intra_op_threads=threads,
        inter_op_threads=1,
        batch_size=batch_size,
        int8_settings=int8_settings,
        reasons={
            "providers": providers_reason,
            "precisions": (
                "fp16 halves memory traffic and uses tensor cores; ORT's GPU int8 path is the opt-in TensorRT EP "
                "with QDQ models, and dynamically quantized models mostly fall back to CPU kernels under the "
                "CUDA EP" if on_gpu else
                "on CPU, int8 (weights only with dynamic, weights and activations with static calibration) "
                "is the main speed-up over fp32; fp16 has no fast CPU kernels in ORT"),
            "threads": (f"one intra-op thread per usable physical core ({threads}): hyper-threads share the "
                        "vector units, and inter-op parallelism of 1 avoids oversubscribing them"),
            "batch_size": batch_reason,
            "int8_settings": int8_reason,
        },
    )


def _providers(profile: HardwareProfile) -> tuple[tuple[str, ...], str]:
    """CUDA first only if NVML saw a GPU and ORT was built with the CUDA EP; CPU always last."""
    available = profile.runtime.ort_providers
    trt_note = (f"; {TENSORRT_EP} is available but not chosen by default (engine builds take minutes and "
                "need TensorRT libraries): opt in explicitly" if TENSORRT_EP in available else "")
    if profile.has_gpu and CUDA_EP in available:
        return (CUDA_EP, CPU_EP), (f"NVML found {len(profile.gpus)} GPU(s) and ONNX Runtime offers {CUDA_EP}; "
                                   f"{CPU_EP} stays as fallback for unsupported ops{trt_note}")
    if profile.has_gpu:
        return (CPU_EP,), (f"NVML found {len(profile.gpus)} GPU(s) but this ONNX Runtime build lacks {CUDA_EP} "
                           f"(available: {', '.join(available) or 'none'}); install onnxruntime-gpu matching "
                           f"CUDA {profile.gpus[0].cuda_version or '?'} to use it")
    if CUDA_EP in available:
        return (CPU_EP,), (f"ONNX Runtime lists {CUDA_EP}, but NVML found no GPU, and asking for it without "
                           f"one logs an error and silently falls back to CPU{trt_note}")
    return (CPU_EP,), f"no GPU found; {CPU_EP} only"


def _batch_size(profile: HardwareProfile, on_gpu: bool) -> tuple[int, str]:
    """Power of two proportional to free memory, clamped; the infer stage refines it."""
    if on_gpu:
        free = profile.gpus[0].memory_free_bytes
        per_gib, cap, where = _GPU_BATCH_PER_GIB, _GPU_BATCH_MAX, f"free memory on GPU 0 ({profile.gpus[0].name})"
    else:
        free = profile.memory.available_bytes
        per_gib, cap, where = _CPU_BATCH_PER_GIB, _CPU_BATCH_MAX, "available RAM"
    if free is None:
        return _DEFAULT_BATCH, f"{where} unknown, so a middle-of-the-road {_DEFAULT_BATCH}"
    raw = max(int(free / _GIB * per_gib), 1)
    batch = min(1 << (raw.bit_length() - 1), cap)
    return batch, (f"{per_gib} items per GiB of {where} ({free / _GIB:.1f} GiB), rounded down to a power "
                   f"of two and capped at {cap}")


def int8_settings_for(profile: HardwareProfile) -> tuple[dict[str, Any], str]:
    """Keyword arguments for `onnxruntime.quantization.quantize_dynamic`, chosen from the CPU's ISA.

    `weight_type` is the QuantType member name: pass `QuantType[settings["weight_type"]]`. Dynamic
    quantization always uses uint8 activations, so these models are U8S8 (uint8 x int8).
    """
    cpu = profile.cpu
    settings: dict[str, Any] = {
        "weight_type": "QInt8",
        "per_channel": True,  # per-channel weight scales recover most of the accuracy int8 loses
        "reduce_range": False,
        # Quantize only MatMuls with constant weights: activation x activation MatMuls (attention) would be
        # u8 x u8, which is slower on x86 and costs accuracy. ORT's default for dynamic mode; stated for the record.
        "extra_options": {"MatMulConstBOnly": True},
    }
    if cpu.is_arm:
        return settings, ("ARM int8 dot products widen to 32 bits without saturation, so full 8-bit weights "
                          "(reduce_range=False) with per-channel scales")
    if cpu.vnni:
        which = "AMX" if cpu.amx else "AVX-512 VNNI" if cpu.avx512_vnni else "AVX-VNNI"
        return settings, (f"{which} accumulates u8 x s8 products straight into int32 (VPDPBUSD), so there is no "
                          "saturation: full 8-bit weights (reduce_range=False), per-channel scales")
    settings["reduce_range"] = True
    isa = "AVX2 without VNNI" if cpu.avx2 else ("an x86 CPU without AVX2" if cpu.avx2 is False
                                              else "an unknown ISA (assume no VNNI)")
    return settings, (f"on {isa}, U8S8 kernels sum pairs of u8 x s8 products in int16 (VPMADDUBSW), which "
                      "saturates; 7-bit weights (reduce_range=True) avoid that, and per-channel scales win back "
                      "precision (ORT quantize_dynamic docs; onnxruntime issues #5849, #6004)")
