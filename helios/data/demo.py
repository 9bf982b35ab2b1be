"""Demo corpora: real MNIST digits as PNG files (optionally corrupted) or topic texts, plus labels.csv."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from helios.data.corruptions import CORRUPTIONS, apply_corruption
from helios.errors import UsageError

KINDS = ("mnist", "text")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _mnist(n: int, out_dir: Path, corrupt: tuple[str, ...], rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Held-back test digits first (so accuracy is honest), then the rest; corruptions spread evenly over the files."""
    from helios.models.mnist_data import load_split

    x_train, y_train, x_test, y_test = load_split()
    images, labels = np.concatenate([x_test, x_train]), np.concatenate([y_test, y_train])
    idx = np.arange(n) % len(images)
    groups = ("clean", *corrupt)
    which = np.arange(n) % len(groups)
    rng.shuffle(which)
    rows = []
    for g, name in enumerate(groups):
        members = idx[which == g]
        batch = images[members] if name == "clean" else apply_corruption(name, images[members], rng)
        for i, (img, label) in zip(np.flatnonzero(which == g), zip(batch, labels[members])):
            rel = f"{name}/{i:06d}.png"
            (out_dir / name).mkdir(parents=True, exist_ok=True)
            (out_dir / rel).write_bytes(_png(img))
            rows.append((rel, str(int(label)), name))
    return rows


def _text(n: int, out_dir: Path, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    from helios.data.text_corpus import TOPICS, write_text

    topics = list(TOPICS)
    rows = []
    for i in range(n):
        topic = topics[rng.integers(len(topics))]
        rel = f"{topic}/{i:06d}.txt"
        (out_dir / topic).mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_text(write_text(topic, rng), encoding="utf-8")
        rows.append((rel, topic, "clean"))
    return rows


def write_demo(kind: str, n: int, out_dir: Path, corrupt: tuple[str, ...] = (), seed: int = 0) -> Path:
    """Write ``n`` files under ``out_dir/files`` and ``out_dir/labels.csv`` beside them; return the CSV path.

    The CSV has columns path (relative to ``out_dir/files``), label and corruption ('clean' or its name). Keeping it
    outside ``files/`` means ``helios run --input OUT/files --labels OUT/labels.csv`` never scans the labels as input.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown demo kind {kind!r}: use one of {', '.join(KINDS)}")
    unknown = [c for c in corrupt if c not in CORRUPTIONS]
    if unknown:
        raise UsageError(f"unknown corruption(s) {', '.join(unknown)}: choose from {', '.join(sorted(CORRUPTIONS))}")
    if kind == "text" and corrupt:
        raise UsageError("--corrupt applies to --kind mnist only")
    if n < 1:
        raise UsageError(f"--n {n}: give at least 1 file")
    files = out_dir / "files"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = _mnist(n, files, corrupt, rng) if kind == "mnist" else _text(n, files, rng)
    labels = out_dir / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "corruption"])
        writer.writerows(sorted(rows))
    return labels
