"""Refine at scale, side by side in one run (issue #17): `helios run` on 50,000 and 200,000 shifted MNIST files
(fresh work directories), then the 50,000 again unchanged; and a 224x224 RGB set with a ResNet-18-sized BatchNorm
model (random weights). Not a timed test.

    python benchmarks/bench_refine_scale.py mnist --n 50000 --big 200000 --work /tmp/hbench
    python benchmarks/bench_refine_scale.py rgb --n 20000 --work /tmp/hbench --set refine.threshold=0.2

Peak memory is the RSS summed over the run's process tree (the Prefect server included), sampled every 200 ms, for
the whole run and per phase (windows read from the log: before infer, infer, refine = from the infer subflow's end
to the refine task's end, review, report, after); /usr/bin/time's maximum RSS of the main process beside it; the
whole 200 ms timeline (tree and main process) in `<work>/refine-scale-*/<run>.rss.tsv`. Load averages before and after each run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_infer import load, tree_rss  # noqa: E402
from bench_refine_corpus import link_prefix, write_mnist, write_rgb  # noqa: E402

STAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) \|")


EVENTS = (("infer", r"Beginning subflow run '[^']+' for flow 'helios-infer'"),
          ("refine", r"Flow run '[^']+' - Finished in state Completed"),
          ("review", r"Task run 'refine-[^']+' - Finished in state"),
          ("report", r"Task run 'review-[^']+' - Finished in state"),
          ("after", r"Task run 'report-[^']+' - Finished in state"))


def stage_windows(log: str, day: str, start: float, end: float) -> dict[str, tuple[float, float]]:
    """Epoch-second windows of the run's phases from its log: before (detect, scan, prepare, optimize), infer,
    refine (from the infer subflow's end to the refine task's end), review, report, after (tracking, shutdown)."""
    marks = {}
    for line in log.splitlines():
        m = STAMP.match(line)
        for name, pattern in EVENTS:
            if m and name not in marks and re.search(pattern, line) and (name == "infer" or "infer" in marks):
                marks[name] = datetime.strptime(f"{day} {m.group(1)}", "%Y-%m-%d %H:%M:%S.%f").timestamp()
    edges = [("before", start), *((name, marks.get(name)) for name, _ in EVENTS)]
    edges = [(name, at) for name, at in edges if at is not None] + [("end", end)]
    return {name: (at, edges[i + 1][1]) for i, (name, at) in enumerate(edges[:-1])}


def helios_run(name: str, out: Path, args: list[str]) -> dict:
    """`helios run ... --out out/run` with a fresh Prefect home under ``out``: stages, RSS, accuracy, refine facts."""
    import psutil

    (out / "prefect-home").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(out / "prefect-home"), "PYTHONPATH": str(HERE.parent),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    env.pop("PREFECT_API_URL", None)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "helios.cli", "run", "--out", str(out / "run"), *args]
    before, start, day = load(), time.time(), time.strftime("%Y-%m-%d")
    log_path = out / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out)
        ps, samples, timeline = psutil.Process(proc.pid), [], []
        while proc.poll() is None:
            samples.append((time.time(), tree_rss(ps)))
            timeline.append(f"{samples[-1][0]:.1f}\t{samples[-1][1] >> 20}\t{main_rss(ps) >> 20}")
            time.sleep(0.2)
    (out / f"{name}.rss.tsv").write_text("epoch_s\ttree_mb\tmain_mb\n" + "\n".join(timeline) + "\n")
    text = log_path.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{text[-4000:]}")
    report = json.loads((out / "run" / "report.json").read_text())
    peaks = {phase: round(max([r for t, r in samples if a <= t <= b] or [0]) / 2**20)
             for phase, (a, b) in stage_windows(text, day, start, time.time()).items()}
    main_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    refine = report["refine"]
    row = {"name": name, "wall_s": round(time.time() - start, 1), "stages": report["stages"],
           "peak_tree_mb": round(max(r for _, r in samples) / 2**20), "peak_main_mb": round(main_kb / 1024),
           "peak_refine_mb": peaks.get("refine"), "peaks_mb": peaks,
           "accuracy": report.get("accuracy"), "refine_status": refine.get("status"),
           "adaptation": refine.get("adaptation"), "mixture": (refine.get("mixture") or {}).get("split"),
           "methods": {k: {"touched": v["touched"], "seconds": v["seconds"]} for k, v in refine.get("methods", {}).items()},
           "variant": report["model"].get("variant"), "load_before": before, "load_after": load()}
    print(json.dumps(row), flush=True)
    return row


def main_rss(time_proc) -> int:
    """RSS of the `helios run` Python process itself (the child of /usr/bin/time); 0 before it starts."""
    import psutil

    try:
        children = time_proc.children()
        return children[0].memory_info().rss if children else 0
    except psutil.Error:
        return 0


def settings(args) -> list[str]:
    return [part for kv in args.set for part in ("--set", kv)]


def mnist(args) -> list[dict]:
    work = Path(args.work)
    big = write_mnist(args.big, work / f"mnist-{args.big}").parent
    small = link_prefix(big, args.n, work / f"mnist-{args.n}").parent
    rows = []
    for n, corpus in ((args.n, small), (args.big, big)):
        out = work / f"refine-scale-{n}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        run_args = ["--input", str(corpus / "files"), "--labels", str(corpus / "labels.csv"), *settings(args)]
        rows.append(helios_run(f"mnist-{n}", out, run_args))
        if n == args.n:
            rows.append(helios_run(f"mnist-{n}-rerun", out, run_args))
    return rows


def build_resnet18(dst: Path) -> Path:
    """A ResNet-18-sized Hugging Face image classifier (11.2 M parameters, BatchNorm, 10 classes, random weights)
    with the ConvNeXT processor microsoft/resnet-18 declares."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    if (dst / "config.json").is_file():
        return dst
    torch.manual_seed(0)
    labels = {"id2label": {i: f"class_{i}" for i in range(10)}, "label2id": {f"class_{i}": i for i in range(10)}}
    config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                          embedding_size=64, **labels)
    ResNetForImageClassification(config).eval().save_pretrained(dst)
    ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(dst)
    return dst


def rgb(args) -> list[dict]:
    work = Path(args.work)
    files = write_rgb(args.n, work / f"rgb-{args.n}")
    model = build_resnet18(work / "resnet18-random")
    out = work / f"refine-scale-rgb-{args.n}"
    if not args.keep:
        subprocess.run(["rm", "-rf", str(out)], check=True)
    return [helios_run(f"rgb-{args.n}", out, ["--input", str(files), "--model", str(model), *settings(args)])]


def table(rows: list[dict]) -> None:
    print("\n| run | wall s | infer s | refine s | refine / infer | peak RSS tree MB | per phase MB (before, infer, "
          "refine, review, report, after) | main MB | accuracy infer -> refine | load before / after |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---|---|")
    for r in rows:
        s, acc = r["stages"], r["accuracy"] or {}
        ratio = s["refine"] / max(s["infer"], 1e-9)
        accuracy = f"{acc.get('infer', 0):.2%} -> {acc.get('refine', 0):.2%}" if acc else ""
        phases = ", ".join(str(r["peaks_mb"].get(k, "-")) for k in ("before", "infer", "refine", "review", "report",
                                                                    "after"))
        print(f"| {r['name']} | {r['wall_s']} | {s['infer']:.1f} | {s['refine']:.1f} | {ratio:.2f}x | "
              f"{r['peak_tree_mb']} | {phases} | {r['peak_main_mb']} | {accuracy} | "
              f"{r['load_before']} / {r['load_after']} |")
    by = {r["name"]: r for r in rows}
    names = sorted(n for n in by if n.startswith("mnist-") and not n.endswith("rerun"))
    if len(names) == 2:
        small, large = sorted(names, key=lambda n: int(n.split("-")[1]))
        print(f"\npeak RSS {large} / {small}: tree {by[large]['peak_tree_mb'] / by[small]['peak_tree_mb']:.3f}, "
              f"main {by[large]['peak_main_mb'] / by[small]['peak_main_mb']:.3f} (goal: within 1.10)")
        s = by[small]["stages"]
        print(f"refine / infer at {small}: {s['refine'] / s['infer']:.2f}x (goal: at most 2)")
        rerun = by.get(f"{small}-rerun")
        if rerun:
            r = rerun["stages"]
            print(f"unchanged rerun: infer + refine {r['infer'] + r['refine']:.1f} s, all stages "
                  f"{sum(r.values()):.1f} s (goal: at most 10 s); adaptation {rerun['adaptation']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["mnist", "rgb"])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--big", type=int, default=200_000)
    parser.add_argument("--work", default="/tmp/hbench")
    parser.add_argument("--keep", action="store_true", help="rgb: keep the run directory of an earlier run (its "
                        "infer answers are reused; refine runs afresh unless its adaptation was kept)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a helios run setting")
    args = parser.parse_args()
    print(f"load {load()}", flush=True)
    rows = mnist(args) if args.kind == "mnist" else rgb(args)
    table(rows)


if __name__ == "__main__":
    main()
