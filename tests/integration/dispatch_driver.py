"""Run the infer stage with ``infer.pool=gpu`` against the Prefect server in PREFECT_API_URL; print the InferResult.

Usage: python dispatch_driver.py WORK_DIR N_FILES [TIMEOUT_S]   (a separate process: its Prefect settings come from
the env). When the GPU stage fails it prints ``GPU_STAGE_ERROR`` with the message and ``RETURNED_AT`` with the time
the call came back (after the slot was released), and exits 3.
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from flows.dispatch import GpuStageError, run_infer_stage
from helios.models.config import ModelConfig
from helios.models import load_model
from tasks.infer.config import InferConfig
from tasks.infer.model_ref import make_model_ref
from tasks.infer.scan import scan_input
from tasks.prepare.export import export_onnx


def write_digits(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(buf, format="PNG")
        (root / f"{i:04d}.png").write_bytes(buf.getvalue())


def main(work: Path, n: int, timeout_s: float = 180) -> None:
    write_digits(work / "in", n)
    (work / "in" / "broken.png").write_bytes(b"not a png")
    model = ModelConfig(name="mnist-cnn")
    ref = make_model_ref(model, export_onnx(load_model(model), work / "model", 17), intra_op_threads=1)
    run_dir = work / "run"
    scan = scan_input(str(work / "in"), run_dir)
    try:
        result = run_infer_stage(InferConfig(pool="gpu", batch_size=16, shard_size=100), ref, str(scan.manifest_path),
                                 str(run_dir), {}, timeout_s=timeout_s)
    except GpuStageError as exc:
        print(f"GPU_STAGE_ERROR {exc}\nRETURNED_AT {time.time()}", flush=True)
        sys.exit(3)
    print("INFER_RESULT " + result.model_dump_json())


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), *(float(a) for a in sys.argv[3:4]))
