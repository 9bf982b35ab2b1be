"""Peak memory of scan + infer over a table input, side by side: a 100,000-row and a 1,000,000-row Parquet of short
texts, each run in a fresh process. Not a timed test.

    python benchmarks/bench_tables.py --rows 100000 1000000 --unique 1000 [--outputs label embeddings]

Texts repeat (``--unique`` distinct sentences, each row numbered apart by its id column only): the model runs once
per distinct text, as Helios deduplicates by content hash, while everything that grows with the rows — the scan's
chunks and row copies, the manifest, the plan and the merge — handles every row. Each child reports its own peak
RSS (``ru_maxrss``; the Prefect server it starts is a separate process and not counted) with the load average
before and after. Prints a table and the ratio of the largest input's peak to the smallest's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("film match market election goal stock actor vote team price album court season league bank rate "
         "trial song storm crop").split()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_table(path: Path, rows: int, unique: int, group: int = 65_536) -> Path:
    """``rows`` short texts (``unique`` distinct ones) with an id column, in row groups of ``group`` (what common
    writers use), written chunk by chunk."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.is_file() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    rng = np.random.default_rng(0)
    sentences = np.array([" ".join(rng.choice(WORDS, size=8)) + f" #{i}" for i in range(unique)], dtype=object)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            ids = [f"row-{i}" for i in range(start, start + n)]
            writer.write_table(pa.table({"id": ids, "text": sentences[np.arange(start, start + n) % unique]},
                                        schema=schema), row_group_size=group)
    return path


def child(args) -> None:
    """One scan + infer run in this process; prints one JSON line."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    sys.path.insert(0, str(ROOT))
    from prefect.client.orchestration import get_client

    from flows.infer import infer_flow
    from helios.models.config import ModelConfig
    from tasks.infer.config import InferConfig
    from tasks.infer.model_ref import make_model_ref
    from tasks.infer.scan import scan_input
    from tasks.infer.table import TableSpec

    with get_client(sync_client=True) as client:
        client.api_healthcheck()
    ref = make_model_ref(ModelConfig(name="minilm"), args.onnx, intra_op_threads=0)
    start = time.perf_counter()
    scan = scan_input(args.table, Path(args.out), TableSpec("text", "id"))
    scan_s = time.perf_counter() - start
    cfg = InferConfig(batch_size=32, outputs=tuple(args.outputs), full=True)
    result = infer_flow(cfg, ref, str(scan.manifest_path), args.out, {})
    print(json.dumps({"rows": result.counts["files"], "ok": result.counts["ok"], "scan_s": round(scan_s, 1),
                      "infer_s": round(result.seconds, 1), "total_s": round(time.perf_counter() - start, 1),
                      "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "predictions_mb": round(Path(result.predictions_path).stat().st_size / 2**20, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--unique", type=int, default=1000)
    ap.add_argument("--outputs", nargs="+", default=["label"])
    ap.add_argument("--work", default="helios-work/bench-tables")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--table")
    ap.add_argument("--out")
    ap.add_argument("--onnx")
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(ROOT))
    from helios.models import load_model
    from helios.models.config import ModelConfig
    from tasks.prepare.export import export_onnx

    work = Path(args.work).resolve()
    onnx = work / "onnx" / "model.onnx"
    if not onnx.is_file():
        onnx = export_onnx(load_model(ModelConfig(name="minilm")), work / "onnx", 17)
    rows = []
    for n in args.rows:
        table = write_table(work / f"t{n}" / "texts.parquet", n, args.unique)
        before = load()
        cmd = [sys.executable, __file__, "--child", "--table", str(table), "--out", str(work / f"run{n}"),
               "--onnx", str(onnx), "--outputs", *args.outputs]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            sys.exit(f"run of {n} rows failed:\n{done.stderr[-3000:]}")
        rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "load": f"{before} / {load()}"})
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; outputs {args.outputs}; "
          f"{args.unique} distinct texts")
    print("| rows | ok | scan s | infer s | total s | peak MB | predictions MB | load before / after |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['rows']:,} | {r['ok']:,} | {r['scan_s']} | {r['infer_s']} | {r['total_s']} | {r['peak_mb']} | "
              f"{r['predictions_mb']} | {r['load']} |")
    print(f"peak memory {rows[-1]['rows']:,} vs {rows[0]['rows']:,} rows: {rows[-1]['peak_mb'] / rows[0]['peak_mb']:.3f}x")


if __name__ == "__main__":
    main()
