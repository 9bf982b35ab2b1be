"""Side by side in one process, on the same inputs: PyTorch fp32 eager (and, for minilm, sentence-transformers'
own ``encode``) against every variant the optimize stage builds. Prints throughput, ratios and quality.

    python benchmarks/bench_optimize.py --model minilm --n 256
    python benchmarks/bench_optimize.py --model mnist-cnn --n 2000

Inputs are real: MNIST digits from the demo corpus, and for minilm paragraphs of the Python reference manual
shipped with CPython (``pydoc_data.topics``: real prose with real lengths, nothing downloaded). Every contender
sees the same items in the same order (text sorted by length, as the infer stage buckets it) at its best batch
size; rounds are interleaved and the best round is kept, which damps noise from other processes. Not a test.

Rows marked ``2x1`` run two one-thread runs at once from two Python threads (each on half the items): the way the
infer stage uses the cores (see ``tasks.infer.shard``). PyTorch gets the same treatment, so both sides are
compared at their best.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prose(n: int, out: Path, seed: int = 0) -> list[Path]:
    """``n`` paragraphs of the Python reference manual as .txt files (at least 12 words, mostly letters)."""
    from pydoc_data.topics import topics

    paragraphs = []
    for _, text in sorted(topics.items()):
        for para in re.split(r"\n\s*\n", text):
            para = " ".join(para.split())
            letters = sum(c.isalpha() or c == " " for c in para) / max(len(para), 1)
            if len(para.split()) >= 12 and not para.startswith(">>>") and letters > 0.85:
                paragraphs.append(para)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, idx in enumerate(rng.choice(len(paragraphs), min(n, len(paragraphs)), replace=False)):
        path = out / f"{i:05d}.txt"
        path.write_text(paragraphs[idx], encoding="utf-8")
        paths.append(path)
    return paths


def digits(n: int, out: Path) -> list[Path]:
    from helios.data.demo import write_demo

    write_demo("mnist", n, out)
    return sorted((out / "files").rglob("*.png"))


def best_time(fn, times: dict, cpu: dict, key: str) -> None:
    """Keep the fastest wall time and the smallest process CPU time seen for ``key``."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    times[key] = min(times.get(key, float("inf")), time.perf_counter() - t)
    cpu[key] = min(cpu.get(key, float("inf")), time.process_time() - c)


def two_by_one(fn, feeds, torch_module=None):
    """Run ``fn`` over ``feeds`` split between two Python threads, one intra-op thread each; outputs in order.

    ``torch_module``: for PyTorch, whose intra-op thread count is process-wide (set to 1 for the run)."""
    def run():
        parts: list = [None, None]

        def work(k):
            parts[k] = fn(feeds[k::2])
        previous = torch_module.get_num_threads() if torch_module else None
        if torch_module:
            torch_module.set_num_threads(1)
        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if torch_module:
            torch_module.set_num_threads(previous)
        merged = [None] * len(feeds)  # back into feed order, so quality compares like with like
        merged[0::2], merged[1::2] = parts[0], parts[1]
        return [np.concatenate(p) for p in zip(*merged)]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["minilm", "mnist-cnn"], default="mnist-cnn")
    parser.add_argument("--n", type=int, default=None, help="Items (default: 256 texts or 2000 digits).")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="Default: the hardware recommendation.")
    parser.add_argument("--out", type=Path, default=None, help="Where to write the variants (default: a temp dir).")
    args = parser.parse_args()

    import torch

    from hardware import detect, recommend
    from helios.models.config import ModelConfig
    from helios.models import load_model
    from tasks.optimize.config import OptimizeConfig
    from tasks.optimize.core import load_eval_sample, optimize_model
    from helios.samples import order_for_batching
    from tasks.optimize.evaluate import cosine
    from tasks.optimize.runtime import open_runner
    from tasks.prepare.config import PrepareConfig
    from tasks.prepare.core import prepare_model

    text = args.model == "minilm"
    n = args.n or (256 if text else 2000)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-optimize-"))
    paths = prose(n, out / "input") if text else digits(n, out / "input")
    profile = detect(str(out), io_probe_seconds=0.1)
    rec = recommend(profile)
    if args.threads:
        rec = dataclasses.replace(rec, intra_op_threads=args.threads)
    threads = rec.intra_op_threads
    torch.set_num_threads(threads)
    load_before = os.getloadavg()

    adapter = load_model(ModelConfig(name=args.model))
    batch_sizes = (8, 32) if text else (8, 32, 128)  # batch 1 is measured by the latency runs
    cfg = OptimizeConfig(eval_samples=min(n, 256), calibration_samples=128, batch_sizes=batch_sizes, latency_runs=30)
    t0 = time.perf_counter()
    prepared = prepare_model(PrepareConfig(), adapter, paths, out / "model", rec.providers, threads)
    result = optimize_model(cfg, adapter, prepared, paths, out / "model", profile, rec)
    stage_s = time.perf_counter() - t0

    items, _ = load_eval_sample(adapter, paths, n, None)
    items = [items[i] for i in order_for_batching(adapter, items)]
    module = adapter.torch_module()

    def batches(size):
        return [adapter.collate(items[i:i + size]) for i in range(0, len(items), size)]

    def torch_parts(feeds):
        with torch.inference_mode():
            outs = [module(*(torch.from_numpy(f[k]) for k in adapter.input_names)) for f in feeds]
        return [tuple(t.numpy() for t in (o if isinstance(o, tuple) else (o,))) for o in outs]

    def torch_run(feeds):
        return [np.concatenate(p) for p in zip(*torch_parts(feeds))]

    contenders = {}
    for b in batch_sizes:
        contenders[f"pytorch-fp32 b{b}"] = (lambda feeds=batches(b): torch_run(feeds), b)
    if threads == 2:
        contenders[f"pytorch-fp32 b{batch_sizes[0]} 2x1"] = (
            two_by_one(torch_parts, batches(batch_sizes[0]), torch), batch_sizes[0])
    if text:
        from sentence_transformers import SentenceTransformer

        from helios.models.minilm import minilm_path

        st = SentenceTransformer(str(minilm_path()), device="cpu")
        st.max_seq_length = 256
        raw = [str(d.value) for d in items]
        contenders["sentence-transformers encode b32"] = (
            lambda: [None, st.encode(raw, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)], 32)
    runners = {}
    for v in result.variants:
        if v.error:
            continue
        runner = open_runner(v.path, rec.providers, threads, optimized=v.name == "fp32")
        runners[v.name] = runner
        for b in sorted({1, v.best_batch}):  # the stage's best batch, and batch 1 (no padding at all)
            contenders[f"{v.name} b{b}"] = (
                lambda r=runner, feeds=batches(b): [np.concatenate(p) for p in zip(*(r.run(f) for f in feeds))], b)
        if threads == 2 and v.name == result.selected.name:
            single = open_runner(v.path, rec.providers, 1, optimized=v.name == "fp32")
            for b in sorted({1, v.best_batch}):
                contenders[f"{v.name} b{b} 2x1"] = (
                    two_by_one(lambda fs, r=single: [r.run(f) for f in fs], batches(b)), b)

    outputs, times, cpu = {}, {}, {}
    for name, (fn, _) in contenders.items():
        outputs[name] = fn()  # warm-up, and the outputs for quality
    for _ in range(args.rounds):
        for name, (fn, _) in contenders.items():
            best_time(fn, times, cpu, name)
    load_after = os.getloadavg()

    torch_best = min((k for k in times if k.startswith("pytorch")), key=times.get)
    st_key = next((k for k in times if k.startswith("sentence")), None)
    ref = outputs[torch_best]
    print(f"\nmachine: {profile.cpu.model} | {profile.hardware_class} | {threads} threads | "
          f"python {platform.python_version()} torch {torch.__version__} | onnxruntime "
          f"{__import__('onnxruntime').__version__}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min) | {len(items)} "
          f"{'texts (pydoc prose)' if text else 'MNIST digits'} | best of {args.rounds} interleaved rounds | "
          f"optimize stage {stage_s:.1f} s, selected {result.selected.name}")
    header = f"{'contender':36s} {'items/s':>9s} {'x torch':>8s}" + (f" {'x s-t':>6s}" if st_key else "")
    quality_head = "mean cos / min cos" if text else "top-1 agree"
    print(header + f" {'/cpu-s':>7s}  {quality_head:>20s} {'size MB':>8s}")
    sizes = {v.name: v.size_bytes for v in result.variants}
    for name in contenders:
        rate = len(items) / times[name]
        row = f"{name:36s} {rate:9.1f} {times[torch_best] / times[name]:8.2f}"
        if st_key:
            row += f" {times[st_key] / times[name]:6.2f}"
        row += f" {len(items) / cpu[name]:7.1f}"
        got = outputs[name]
        if text:
            cos = cosine(got[1].astype(np.float64), ref[1].astype(np.float64))
            quality = f"{cos.mean():.4f} / {cos.min():.4f}"
        else:
            quality = f"{(got[0].argmax(1) == ref[0].argmax(1)).mean():.2%}"
        variant = name.split(" ")[0]
        size = f"{sizes[variant] / 2**20:8.1f}" if variant in sizes else f"{'':8s}"
        mark = "  <- selected" if name == f"{result.selected.name} b{result.selected.best_batch}" else ""
        print(f"{row}  {quality:>20s} {size}{mark}")
    print("items/s: best wall-clock round; /cpu-s: items per second of process CPU time (less sensitive to "
          "other processes; spinning thread pools count)")
    print(f"\nvariants, reasons and recipes: {result.table_path}")


if __name__ == "__main__":
    main()
