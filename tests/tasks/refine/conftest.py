"""Real tiny components for the refine tests: mnist-cnn exported to ONNX, corrupted digits written as PNG files in
class folders (the order that breaks naive TENT), and the infer stage's prediction columns computed with ORT."""
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helios.data.corruptions import apply_corruption
from helios.models.mnist_cnn import MnistCnn, load_mnist_cnn
from helios.models.mnist_data import load_split
from tasks.prepare.export import export_onnx
from tasks.session import open_session

N_FILES = 160


@dataclass
class Scan:
    root: Path
    adapter: object
    onnx_path: Path
    frame: pd.DataFrame
    truth: dict


def write_pngs(root: Path, images: np.ndarray, labels: np.ndarray) -> list[str]:
    from PIL import Image

    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        rel = f"{label}/{i:04d}.png"
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(image, mode="L").save(buf, format="PNG")
        (root / rel).write_bytes(buf.getvalue())
        paths.append(rel)
    return paths


def infer_frame(adapter, onnx_path: Path, root: Path, paths: list[str]) -> pd.DataFrame:
    """What the infer stage hands over: ok rows with label/confidence, sorted by path (class-grouped)."""
    session = open_session(onnx_path)
    feeds = adapter.collate([adapter.preprocess((root / p).read_bytes()) for p in paths])
    scored = adapter.postprocess(session.run(feeds)[0])
    labels = [adapter.labels[i] for i in scored.label_idx]
    frame = pd.DataFrame({"path": paths, "status": "ok", "error": None, "flag": None, "label": labels,
                          "confidence": scored.confidence.astype(np.float64), "infer_label": labels,
                          "infer_confidence": scored.confidence.astype(np.float64), "final_stage": "infer"})
    return frame.sort_values("path").reset_index(drop=True)


@pytest.fixture(scope="session")
def mnist_onnx(tmp_path_factory):
    adapter = load_mnist_cnn()
    return adapter, export_onnx(adapter, tmp_path_factory.mktemp("mnist-onnx"), 17)


@pytest.fixture(scope="session")
def scan(tmp_path_factory, mnist_onnx) -> Scan:
    """160 held-back digits under glass blur (the source model is often confidently wrong there)."""
    adapter, onnx_path = mnist_onnx
    _, _, x, y = load_split()
    images = apply_corruption("glass_blur", x[:N_FILES], np.random.default_rng(0))
    root = tmp_path_factory.mktemp("scan")
    paths = write_pngs(root, images, y[:N_FILES])
    frame = infer_frame(adapter, onnx_path, root, paths)
    truth = {p: str(int(label)) for p, label in zip(paths, y[:N_FILES])}
    return Scan(root, adapter, onnx_path, frame, truth)


def build_plain_net():
    """The mnist-cnn shape without BatchNorm."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(4 * 7 * 7, 10))


@dataclass
class PlainCnn(MnistCnn):
    def torch_module(self):
        import torch

        torch.manual_seed(0)
        return build_plain_net().eval()


@pytest.fixture(scope="session")
def plain_onnx(tmp_path_factory):
    base = load_mnist_cnn()
    adapter = PlainCnn(name="plain", modality="image", task="classifier", labels=base.labels, input_names=("image",))
    return adapter, export_onnx(adapter, tmp_path_factory.mktemp("plain-onnx"), 17)


@pytest.fixture(scope="session")
def plain_frame(scan, plain_onnx):
    adapter, onnx_path = plain_onnx
    return infer_frame(adapter, onnx_path, scan.root, scan.frame["path"].tolist())


@pytest.fixture(scope="session")
def vit_onnx(tmp_path_factory):
    from helios.models.mnist_vit import load_mnist_vit

    adapter = load_mnist_vit()
    return adapter, export_onnx(adapter, tmp_path_factory.mktemp("vit-onnx"), 17)


@pytest.fixture(scope="session")
def vit_frame(scan, vit_onnx):
    adapter, onnx_path = vit_onnx
    return infer_frame(adapter, onnx_path, scan.root, scan.frame["path"].tolist())
