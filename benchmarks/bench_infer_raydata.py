"""Competitor: the same ONNX model driven by Ray Data ``map_batches`` (what a user would pick instead of Helios).

``ray.data.read_binary_files(...).map_batches(OnnxPredictor, concurrency=..., batch_size=...)`` with the same
adapter decode/collate/postprocess as Helios, the object store kept small for this machine, results written to
Parquet. Prints one JSON line. Driven by bench_infer.py.
"""
from __future__ import annotations

import argparse
import json
import os
import time


class OnnxPredictor:
    """One ONNX Runtime session per Ray actor."""

    def __init__(self, model: str, onnx: str, threads: int):
        from helios.models.config import ModelConfig
        from helios.models import load_model
        from tasks.session import open_session

        self.adapter = load_model(ModelConfig(name=model))
        self.session = open_session(onnx, intra_op_threads=threads)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from helios.models import InputError

        good, decoded, errors = [], [], []
        for i, data in enumerate(batch["bytes"]):
            try:
                decoded.append(self.adapter.preprocess(bytes(data)))
                good.append(i)
            except InputError as exc:
                errors.append((i, str(exc)))
        label = np.full(len(batch["path"]), None, dtype=object)
        conf = np.full(len(batch["path"]), np.nan, dtype=np.float32)
        if decoded:
            logits = self.session.session.run(["logits"], self.adapter.collate(decoded))[0]
            scored = self.adapter.postprocess(logits)
            label[good] = np.asarray(self.adapter.labels, dtype=object)[scored.label_idx]
            conf[good] = scored.confidence
        return {"path": batch["path"], "label": label.astype(str), "confidence": conf}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="mnist-cnn")
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads per actor")
    ap.add_argument("--object-store-gb", type=float, default=1.5)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import ray

    ray.init(num_cpus=os.cpu_count(), object_store_memory=int(args.object_store_gb * 2**30), include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": os.getcwd()}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    setup_s = time.perf_counter() - t0

    start = time.perf_counter()
    ds = ray.data.read_binary_files(args.corpus, include_paths=True)
    ds = ds.map_batches(OnnxPredictor, fn_constructor_args=(args.model, args.onnx, args.threads),
                        concurrency=args.concurrency, batch_size=args.batch_size, num_cpus=1)
    ds.write_parquet(args.out)
    total = time.perf_counter() - start
    files = sum(1 for _ in os.scandir(args.out))  # output files; rows counted below
    rows = ray.data.read_parquet(args.out).count()
    print(json.dumps({"files": rows, "stage_s": round(total, 2), "files_per_s": round(rows / total, 1),
                      "setup_s": round(setup_s, 2), "output_files": files, "concurrency": args.concurrency,
                      "threads": args.threads, "batch_size": args.batch_size, "pid": os.getpid()}))
    ray.shutdown()


if __name__ == "__main__":
    main()
