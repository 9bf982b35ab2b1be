"""One infer shard over 224x224 RGB JPEGs with a ResNet-18-sized model (fp32 ONNX, random weights): the CPU image
batch cap of ``tasks.infer.engine`` (``CPU_MAX_BATCH_BYTES``, ``PREFETCH_BYTES``) against no cap, side by side.

Each contender runs in a process of its own (peak RSS is per process), alternating, ``--rounds`` times; each prints
its batch size, images/s and peak RSS. Not a test.

    python benchmarks/bench_batch_cap.py --n 640 --work /tmp/hbench
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def shard(mode: str, work: Path, batch: int) -> None:
    """Run the shard once in this process (``mode``: capped = today's engine, uncapped = caps lifted)."""
    import tasks.infer.engine as engine
    from helios.models.config import ModelConfig
    from tasks.infer.model_ref import make_model_ref
    from tasks.infer.plan import plan_shards
    from tasks.infer.scan import read_manifest, scan_input
    from tasks.infer.shard import ShardSettings, infer_shard

    if mode == "uncapped":
        engine.CPU_MAX_BATCH_BYTES = engine.PREFETCH_BYTES = 1 << 50
    run = work / f"cap-run-{mode}-{os.getpid()}"
    scan = scan_input(str(work / "cap-input"), run)
    manifest, src = read_manifest(scan.manifest_path)
    ref = make_model_ref(ModelConfig(name=str(work / "resnet18-random")), work / "cap-onnx" / "model.onnx",
                         intra_op_threads=2)
    [spec] = plan_shards(manifest, src, set(), ref.identity, 1_000_000, run)
    start = time.perf_counter()
    out = infer_shard(spec, ref, ShardSettings(batch_size=batch))
    seconds = time.perf_counter() - start
    print(json.dumps({"mode": mode, "ok": out.ok, "batch": out.batch_size, "img_per_s": round(out.ok / seconds, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=640, help="JPEGs in the shard")
    parser.add_argument("--batch", type=int, default=64, help="requested batch size (the CPU recommendation)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hbench"))
    parser.add_argument("--child", choices=["capped", "uncapped"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return shard(args.child, args.work, args.batch)
    from bench_refine_corpus import write_rgb
    from bench_refine_scale import build_resnet18

    files = write_rgb(args.n, args.work / f"rgb-{args.n}")
    model = build_resnet18(args.work / "resnet18-random")
    subset = args.work / "cap-input"
    subset.mkdir(parents=True, exist_ok=True)
    for path in sorted(files.glob("*.jpg"))[:args.n]:
        if not (subset / path.name).exists():
            os.link(path, subset / path.name)
    onnx = args.work / "cap-onnx" / "model.onnx"
    if not onnx.exists():
        from helios.models import load_model
        from helios.models.config import ModelConfig
        from tasks.prepare.export import export_onnx

        export_onnx(load_model(ModelConfig(name=str(model))), onnx.parent, 17)
    for _ in range(args.rounds):
        for mode in ("capped", "uncapped"):
            subprocess.run([sys.executable, __file__, "--child", mode, "--work", str(args.work),
                            "--batch", str(args.batch)], check=True)


if __name__ == "__main__":
    main()
