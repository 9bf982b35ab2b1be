"""What a first run costs, before and after: ``helios run`` from two checkouts side by side on the same inputs.

    git worktree add /tmp/base HEAD      # today's code, read-only
    python benchmarks/bench_first_run.py --base /tmp/base --model minilm --n 5000
    python benchmarks/bench_first_run.py --base /tmp/base --model mnist-cnn --n 2000

Each checkout runs ``helios run`` in its own fresh work directory (no MLflow champion, no record of known
failures: a true first run), one after the other, alternating when ``--repeat`` > 1, on the same corpus
(``benchmarks/bench_infer_corpus.py``: unique demo texts or MNIST digits). Prints each run's stage times from its
report.json, the whole run's files/s (files over wall time of the command), the selected variant, and the ratios.
The load average is printed beside every figure: on a shared machine, compare only ratios from one invocation.
Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "benchmarks"))


def run_once(tree: Path, model: str, files: Path, labels: Path, work: Path, extra: list[str]) -> dict:
    """``helios run`` from ``tree`` in a fresh work directory; stage times, files/s and selection from report.json."""
    out = work / "run"
    cmd = [sys.executable, "-m", "helios.cli.app", "run", "--input", str(files), "--labels", str(labels),
           "--model", model, "--out", str(out), "--set", "review.enabled=false", *extra]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tree}: helios run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    counts = report.get("counts", {})
    n = counts.get("files") or counts.get("ok") or 0
    optimize = json.loads((out / "model" / "optimize.json").read_text())
    return {"wall_s": round(wall, 1), "files": n, "files_per_s": round(n / wall, 1), "stages": report.get("stages", {}),
            "selected": optimize.get("selected"), "skipped": optimize.get("skipped", {}),
            "ranking": optimize.get("ranking"), "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="Checkout of today's code (git worktree of HEAD).")
    parser.add_argument("--new", type=Path, default=HERE, help="Checkout with the changes (default: this one).")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="Scratch directory (default: a temp dir).")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="Extra --set for both runs.")
    args = parser.parse_args()

    from bench_infer_corpus import write_corpus

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-first-run-"))
    kind = "text" if args.model == "minilm" else "mnist"
    files = write_corpus(kind, args.n, work / f"corpus-{kind}-{args.n}")
    labels = files.parent / "labels.csv"
    extra = [x for s in args.sets for x in ("--set", s)]
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.repeat):
        for name, tree in (("before", args.base), ("after", args.new)):
            target = work / f"{name}-{r}"
            target.mkdir(parents=True, exist_ok=True)
            results[name].append(run_once(tree.resolve(), args.model, files, labels, target, extra))
            print(f"{name} #{r}: {json.dumps(results[name][-1])}", flush=True)

    def best(name, key):
        return min(x[key] if key == "wall_s" else x["stages"].get(key, float("nan")) for x in results[name])

    print(f"\n{args.model}, {args.n} files, cpu {os.cpu_count()} cores | {args.repeat} run(s) each, best kept")
    print(f"{'':22s} {'before':>9s} {'after':>9s} {'after/before':>13s}")
    stages = list(results["before"][0]["stages"])
    for key in [*stages, "wall_s"]:
        b, a = best("before", key), best("after", key)
        print(f"{key:22s} {b:9.1f} {a:9.1f} {a / b if b else float('nan'):13.2f}")
    for name in results:
        x = results[name][0]
        print(f"{name}: {x['files_per_s']} files/s whole run, selected {x['selected']}, load {x['load_before']} -> "
              f"{x['load_after']}, skipped {sorted(x['skipped'])}")


if __name__ == "__main__":
    main()
