"""Evaluate the refine stage on sets that mix clean and corrupted digits (mnist-cnn, its 1,000 held-back digits).

    python benchmarks/eval_refine_mixtures.py

Each set is the held-back digits cut into equal parts, one per entry (clean or an MNIST-C corruption, seed 0),
refined in one call of the stage's own code (``tasks.refine.work.refine_arrays``) with the default settings.
Prints top-1 error in percent before and after, overall and per part, the compute multiplier, and whether the set
was refined as a mixture (two groups). Not a test.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helios.data.corruptions import apply_corruption  # noqa: E402
from helios.models.base import softmax  # noqa: E402
from helios.models.mnist_cnn import load_mnist_cnn, normalize  # noqa: E402
from helios.models.mnist_data import load_split  # noqa: E402
from tasks.prepare.export import export_onnx  # noqa: E402
from tasks.refine.config import RefineConfig  # noqa: E402
from tasks.refine.context import RefineContext  # noqa: E402
from tasks.refine.work import refine_arrays  # noqa: E402
from tasks.session import open_session  # noqa: E402

SETS = {
    "clean + fog": [None, "fog"],
    "4 clean : 1 fog": [None, None, None, None, "fog"],
    "Quick start mix": [None, "shot_noise", "motion_blur", "rotate", "translate", "fog"],
    "clean + brightness": [None, "brightness"],
    "clean + impulse noise": [None, "impulse_noise"],
    "clean + motion blur": [None, "motion_blur"],
}


def main() -> None:
    adapter = load_mnist_cnn()
    _, _, images, truth = load_split()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(adapter, Path(tmp) / "source", 17)
        session = open_session(onnx_path, intra_op_threads=2)
        print("| set | error before | after | per part (before → after) | compute | refined as |")
        print("| --- | ---: | ---: | --- | ---: | --- |")
        for title, spec in SETS.items():
            parts = np.array_split(np.arange(len(images)), len(spec))
            x = normalize(np.concatenate([images[p] if c is None else apply_corruption(c, images[p], np.random.default_rng(0))
                                          for p, c in zip(parts, spec)]))
            names = np.concatenate([[c or "clean"] * len(p) for p, c in zip(parts, spec)])
            probs = softmax(session.run({"image": x})[0].astype(np.float64))
            label, conf = probs.argmax(1), probs.max(1)
            ctx = RefineContext(RefineConfig(), adapter, onnx_path, Path(tmp) / "work", ("CPUExecutionProvider",), 2)
            start = time.perf_counter()
            out = refine_arrays(ctx, x, label, conf, truth)
            seconds = time.perf_counter() - start

            def err(labels, part=slice(None)):
                return 100 * float((labels[part] != truth[part]).mean())

            per = ", ".join(f"{g} {err(label, names == g):.1f} → {err(out.label, names == g):.1f}"
                            for g in dict.fromkeys(names))
            how = "two sets" if out.summary.get("mixture", {}).get("split") else "one set"
            print(f"| {title} | {err(label):.1f} | {err(out.label):.1f} | {per} | "
                  f"{1 + out.summary.get('multiplier', 0.0):.1f}× ({seconds:.1f} s) | {how} |", flush=True)


if __name__ == "__main__":
    main()
