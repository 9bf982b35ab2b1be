"""One Helios scan-and-infer run in this process; prints one JSON line. Driven by bench_infer.py.

    python benchmarks/bench_infer_helios.py --corpus DIR --out RUN_DIR --model minilm --onnx model.onnx
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def start_prefect_api() -> None:
    """Start (or reach) the Prefect API before timing, as the pipeline flow does before its infer subflow."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.api_healthcheck()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="mnist-cnn")
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--variant", default="fp32")
    ap.add_argument("--threads", type=int, default=0, help="0: from the hardware recommendation")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--runner", default="local")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--isolation", default="process", choices=["process", "thread"])
    args = ap.parse_args()

    # a loaded 2-core machine can take longer than Prefect's default 20 s to start the temporary server
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    t_import = time.perf_counter()
    from flows.infer import infer_flow
    from hardware import detect, recommend
    from helios.models.config import ModelConfig
    from tasks.infer.config import InferConfig
    from tasks.infer.model_ref import make_model_ref
    from flows.runners import make_task_runner
    from tasks.infer.scan import allow_malloc_tuning, scan_input

    allow_malloc_tuning()  # as `helios run` does: the memory figures are the CLI's

    profile = detect(args.corpus, io_probe_seconds=0.1)
    rec = recommend(profile)
    cfg = InferConfig(batch_size=args.batch_size, shard_size=args.shard_size, runner=args.runner,
                      workers=args.workers, isolation=args.isolation)
    ref = make_model_ref(ModelConfig(name=args.model), args.onnx, args.variant, rec.providers,
                         args.threads or rec.intra_op_threads)
    flow = infer_flow.with_options(task_runner=make_task_runner(cfg))
    server_start = time.perf_counter()
    start_prefect_api()  # inside `helios run` the pipeline flow has already started it
    server_s = time.perf_counter() - server_start
    setup_s = time.perf_counter() - t_import

    start = time.perf_counter()
    scan = scan_input(args.corpus, Path(args.out))
    scan_s = time.perf_counter() - start
    result = flow(cfg, ref, str(scan.manifest_path), args.out, profile.to_dict())
    total = time.perf_counter() - start
    print(json.dumps({
        "files": result.counts["files"], "ok": result.counts["ok"], "reused": result.counts["reused"],
        "scan_s": round(scan_s, 2), "flow_s": round(result.seconds, 2), "stage_s": round(total, 2),
        "files_per_s": round(result.counts["files"] / total, 1), "batch_size": result.batch_size,
        "threads": ref.intra_op_threads, "setup_s": round(setup_s, 2), "prefect_start_s": round(server_s, 2),
        "pid": os.getpid(), "isolation": args.isolation,
        "predictions": result.predictions_path,
    }))


if __name__ == "__main__":
    main()
