"""Scan-and-infer benchmarks, side by side in one run, each contender in a fresh process. Not a timed test.

    python benchmarks/bench_infer.py text  --n 50000 --onnx OPT/int8-dynamic.onnx --variant int8-dynamic
    python benchmarks/bench_infer.py mnist --n 50000 --onnx PREP/model.onnx
    python benchmarks/bench_infer.py memory --n 50000 --big 200000 --onnx PREP/model.onnx
    python benchmarks/bench_infer.py isolation --kind mnist --n 50000 --onnx PREP/model.onnx --rounds 2

Each contender's wall time, throughput and peak memory (RSS summed over its process tree, sampled every 100 ms)
are printed with the machine's load average before and after, then the ratios the issue asks for.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_infer_corpus import write_corpus  # noqa: E402


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def tree_rss(proc) -> int:
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(name: str, cmd: list[str], timeout: float = 3600) -> dict:
    """Run ``cmd``; its last stdout line is JSON. Adds wall time, peak tree RSS and load before/after."""
    import psutil

    before, start = load(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE.parent,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None and time.perf_counter() - start < timeout:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.1)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{err[-3000:]}")
    row = json.loads(out.strip().splitlines()[-1])
    row.update(name=name, wall_s=round(wall, 1), peak_rss_mb=round(peak / 2**20), load_before=before, load_after=load())
    print(json.dumps(row), flush=True)
    return row


def helios_cmd(corpus, out, args, isolation: str = "process") -> list[str]:
    cmd = [sys.executable, str(HERE / "bench_infer_helios.py"), "--corpus", str(corpus), "--out", str(out),
           "--model", args.model, "--onnx", args.onnx, "--variant", args.variant, "--isolation", isolation]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    return cmd


def run_speed(args) -> list[dict]:
    corpus = write_corpus(args.kind, args.n, Path(args.work) / f"{args.kind}-{args.n}")
    out = Path(args.work) / f"run-{args.kind}-{args.n}-{args.variant}"
    subprocess.run(["rm", "-rf", str(out)], check=True)
    rows = [measure("helios", helios_cmd(corpus, out, args))]
    rows.append(measure("helios rerun (unchanged)", helios_cmd(corpus, out, args)))
    if args.kind == "text" and "st" in args.compare:
        rows.append(measure("sentence-transformers encode", [sys.executable, str(HERE / "bench_infer_st.py"),
                            "--corpus", str(corpus), "--out", str(Path(args.work) / "st-out")]))
    if "raydata" in args.compare:
        ray_out = Path(args.work) / "raydata-out"
        subprocess.run(["rm", "-rf", str(ray_out)], check=True)
        rows.append(measure("ray data map_batches", [
            sys.executable, str(HERE / "bench_infer_raydata.py"), "--corpus", str(corpus), "--out", str(ray_out),
            "--model", args.model, "--onnx", args.onnx, "--batch-size", str(args.batch_size or 64),
            "--concurrency", str(args.ray_concurrency), "--threads", str(2 // args.ray_concurrency or 1)]))
    return rows


def run_memory(args) -> list[dict]:
    rows = []
    for n in (args.n, args.big):
        corpus = write_corpus("mnist", n, Path(args.work) / f"mnist-{n}")
        out = Path(args.work) / f"run-mem-{n}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        rows.append(measure(f"helios {n} files", helios_cmd(corpus, out, args)))
    return rows


def run_isolation(args) -> list[dict]:
    """Local shards in worker processes against threads, interleaved rounds on the same corpus, fresh run dirs."""
    corpus = write_corpus(args.kind, args.n, Path(args.work) / f"{args.kind}-{args.n}")
    rows = []
    for _ in range(args.rounds):
        for isolation in ("thread", "process"):
            out = Path(args.work) / f"run-{args.kind}-{args.n}-{isolation}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            rows.append(measure(f"helios {isolation}", helios_cmd(corpus, out, args, isolation)))
    return rows


def report_isolation(rows: list[dict]) -> None:
    """Median stage files/s per isolation mode and the cost of processes against threads."""
    from statistics import median

    rate = {m: median(r["files_per_s"] for r in rows if r["name"] == f"helios {m}") for m in ("thread", "process")}
    print(f"process isolation: {rate['process']:.1f} vs {rate['thread']:.1f} files/s (median stage): "
          f"cost {100 * (1 - rate['process'] / rate['thread']):+.1f} %")


def report(rows: list[dict]) -> None:
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB")
    print(f"{'contender':32} {'files':>7} {'stage s':>8} {'files/s':>9} {'wall s':>7} {'peak MB':>8}  load before/after")
    for r in rows:
        print(f"{r['name']:32} {r['files']:>7} {r['stage_s']:>8} {r['files_per_s']:>9} {r['wall_s']:>7} "
              f"{r['peak_rss_mb']:>8}  {r['load_before']} / {r['load_after']}")
    by = {r["name"]: r for r in rows}
    base = by.get("helios")
    for other in ("sentence-transformers encode", "ray data map_batches"):
        if base and other in by:
            print(f"helios / {other}: {base['files_per_s'] / by[other]['files_per_s']:.2f}x files/s (stage), "
                  f"{by[other]['wall_s'] / base['wall_s']:.2f}x wall")
    mem = [r for r in rows if r["name"].endswith("files")]
    if len(mem) == 2:
        print(f"peak memory {mem[1]['files']} vs {mem[0]['files']} files: "
              f"{mem[1]['peak_rss_mb'] / mem[0]['peak_rss_mb']:.3f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["text", "mnist", "memory", "isolation"])
    ap.add_argument("--kind", default="mnist", choices=["mnist", "text"], help="the corpus of `isolation`")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of `isolation`")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--big", type=int, default=200_000)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--compare", default="st,raydata")
    ap.add_argument("--ray-concurrency", type=int, default=1)
    ap.add_argument("--work", default="/tmp/helios-bench")
    ap.add_argument("--results", default=None, help="append the rows as JSON lines here")
    args = ap.parse_args()
    if args.scenario != "isolation":
        args.kind = "text" if args.scenario == "text" else "mnist"
    args.model = "minilm" if args.kind == "text" else "mnist-cnn"
    runs = {"memory": run_memory, "isolation": run_isolation}
    rows = runs.get(args.scenario, run_speed)(args)
    report(rows)
    if args.scenario == "isolation":
        report_isolation(rows)
    if args.results:
        with open(args.results, "a") as fh:
            for r in rows:
                fh.write(json.dumps({**r, "scenario": args.scenario, "variant": args.variant}) + "\n")


if __name__ == "__main__":
    main()
