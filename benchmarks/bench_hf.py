"""Hugging Face classifiers at realistic sizes, side by side in one run: Helios end to end vs a plain PyTorch
transformers loop vs the variant Helios selected driven by a bare ONNX Runtime loop; and, for accuracy, a MiniLM
topic classifier whose head is fitted here, Helios's labels against the model's own head.

    python benchmarks/bench_hf.py image --arch resnet50 --n 2000
    python benchmarks/bench_hf.py image --arch vit-b16 --n 2000
    python benchmarks/bench_hf.py image-variants --arch vit-b16 --n 192   # after `image`: every variant it built
    python benchmarks/bench_hf.py text-accuracy --n 1000
    python benchmarks/bench_hf.py text-speed --n 5000

Models are built from transformers configurations (no downloads). ResNet-50 has random weights and 1,000 labels
(speed and parity only). ViT-B/16 has a random backbone and a two-label head fitted here to tell which of the two
sample photos a crop comes from (400 crops of another seed), so its logits are confident as a fine-tuned model's are
and the optimize stage's agreement gate measures quantization, not near-ties. Images are JPEGs of mixed sizes cut
from scikit-learn's two sample photos. Every contender decodes the same files and preprocesses them as the model's
image processor declares, batch 32, 2 threads; Helios's figure is its infer stage (files / stage seconds: shard
tasks, decode, ORT, writing parquet) and the whole `helios run` wall time beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THREADS, BATCH = 2, 32


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


VIT_LABELS = ("china", "flower")  # scikit-learn's sample photos in load_sample_images order: crop i is of photo i % 2


def build_image_model(arch: str, dst: Path) -> Path:
    """ResNet-50 (ConvNeXT processor: shortest edge 224 / 0.875, crop; random, 1,000 labels) or ViT-B/16 (ViT
    processor: 224x224; random backbone, head fitted by ``fit_vit_photo_head``)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    if (dst / "config.json").is_file():
        id2label = json.loads((dst / "config.json").read_text()).get("id2label", {})
        if arch == "resnet50" or tuple(id2label.values()) == VIT_LABELS:
            return dst
        shutil.rmtree(dst)  # a ViT built before its head was fitted (1,000 random labels)
    torch.manual_seed(0)
    if arch == "resnet50":
        names = [f"class_{i}" for i in range(1000)]
        labels = {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}
        model = ResNetForImageClassification(ResNetConfig(**labels))  # the defaults are ResNet-50
        processor = ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875)
    else:
        labels = {"id2label": dict(enumerate(VIT_LABELS)), "label2id": {name: i for i, name in enumerate(VIT_LABELS)}}
        model = ViTForImageClassification(ViTConfig(**labels)).eval()  # the defaults are ViT-B/16 at 224
        processor = ViTImageProcessorPil(size={"height": 224, "width": 224})
        fit_vit_photo_head(model, processor, dst.parent / f"{dst.name}-head")
    model.eval().save_pretrained(dst)
    processor.save_pretrained(dst)
    return dst


def fit_vit_photo_head(model, processor, work: Path) -> dict:
    """Fit ``model.classifier`` to name the sample photo a crop comes from: logistic regression on the standardized
    features the classifier receives (the layernormed CLS token), fitted on 400 crops (seed 1), checked on 100
    others (seed 2); the benchmark's own crops are seed 0. Standardization is folded into the weights and the one
    logit of the binary fit split as -z/2, +z/2, so the model's softmax is the fit's probability. Writes the held-out
    accuracy and mean max-softmax confidence to ``work/head.json`` and returns them."""
    import torch
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    torch.set_num_threads(THREADS)
    start = time.perf_counter()

    def crops(name: str, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
        paths = write_jpegs(work / name, n, seed=seed)
        with torch.inference_mode():
            feats = [model.vit(pixel_values=processor(images=[Image.open(p).convert("RGB") for p in paths[s:s + BATCH]],
                                                      return_tensors="pt")["pixel_values"]).last_hidden_state[:, 0]
                     for s in range(0, n, BATCH)]
        return torch.cat(feats), np.arange(n) % len(VIT_LABELS)

    (x_train, y_train), (x_held, y_held) = crops("train-seed1", 400, 1), crops("held-out-seed2", 100, 2)
    scaler = StandardScaler().fit(x_train.numpy())
    fit = LogisticRegression(C=10.0, max_iter=10000).fit(scaler.transform(x_train.numpy()), y_train)
    w = fit.coef_[0] / scaler.scale_
    b = fit.intercept_[0] - float(scaler.mean_ @ w)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(np.stack([-w / 2, w / 2])).float())
        model.classifier.bias.copy_(torch.tensor([-b / 2, b / 2]).float())
        probs = model.classifier(x_held).softmax(1).numpy()  # the saved model's own head on held-out crops
    stats = {"labels": list(VIT_LABELS), "train": "400 crops, seed 1", "held_out": "100 crops, seed 2",
             "held_out_accuracy": float((probs.argmax(1) == y_held).mean()),
             "held_out_mean_confidence": float(probs.max(1).mean()),
             "held_out_min_confidence": float(probs.max(1).min()), "fit_s": round(time.perf_counter() - start, 1)}
    (work / "head.json").write_text(json.dumps(stats, indent=1))
    print(f"ViT head ({' vs '.join(VIT_LABELS)}), fitted on 400 crops (seed 1): held-out accuracy "
          f"{stats['held_out_accuracy']:.3f} on 100 crops (seed 2), mean max-softmax "
          f"{stats['held_out_mean_confidence']:.4f} (min {stats['held_out_min_confidence']:.4f}); {stats['fit_s']:.0f} s",
          flush=True)
    return stats


def write_jpegs(dst: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs of mixed sizes (about 120 to 900 px a side) cut and scaled from real photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    dst.mkdir(parents=True, exist_ok=True)
    paths = sorted(dst.glob("*.jpg"))
    if len(paths) >= n:
        return paths[:n]
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[i % 2]
        w, h = int(rng.integers(120, 640)), int(rng.integers(120, 427))
        x, y = int(rng.integers(0, 640 - w + 1)), int(rng.integers(0, 427 - h + 1))
        scale = float(rng.uniform(0.6, 1.5))
        img = photo.crop((x, y, x + w, y + h)).resize((max(1, int(w * scale)), max(1, int(h * scale))))
        img.save(dst / f"{i:05d}.jpg", quality=90)
    return sorted(dst.glob("*.jpg"))[:n]


def run_helios(model: Path, inputs: Path, work: Path, extra: list[str]) -> dict:
    """`helios run` (refine and review off: they are not inference), timed; the report's figures."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "prefect-home").mkdir(parents=True)
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "helios.cli", "run", "--input", str(inputs), "--model", str(model),
           "--out", str(work / "run"), "--set", "refine.enabled=false", "--set", "review.enabled=false",
           "--set", "optimize.eval_samples=64", "--set", "optimize.calibration_samples=32", *extra]
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-4000:])
    report = json.loads((work / "run" / "report.json").read_text())
    selected = report["model"]["variant"]
    return {"wall_s": wall, "stages": report["stages"], "variant": selected,
            "onnx": work / "run" / "model" / f"{selected}.onnx", "predictions": work / "run" / "predictions.parquet"}


def image_batches(paths: list[Path]):
    from PIL import Image

    for s in range(0, len(paths), BATCH):
        yield [Image.open(p).convert("RGB") for p in paths[s:s + BATCH]]


def torch_images(model_dir: Path):
    """A plain transformers loop: PIL decode, AutoImageProcessor, model(pixel_values) in inference mode."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    torch.set_num_threads(THREADS)
    proc = AutoImageProcessor.from_pretrained(str(model_dir))
    model = AutoModelForImageClassification.from_pretrained(str(model_dir)).eval()

    def run(paths: list[Path]) -> tuple[float, np.ndarray]:
        preds, start = [], time.perf_counter()
        with torch.inference_mode():
            for images in image_batches(paths):
                pixels = proc(images=images, return_tensors="pt")["pixel_values"]
                preds.append(model(pixel_values=pixels).logits.argmax(1).numpy())
        return time.perf_counter() - start, np.concatenate(preds)
    return run


def ort_images(model_dir: Path, onnx_path: Path):
    """The same ONNX file in a bare ONNX Runtime loop: PIL decode, AutoImageProcessor, session.run."""
    import onnxruntime as ort
    from transformers import AutoImageProcessor

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    proc = AutoImageProcessor.from_pretrained(str(model_dir))

    def run(paths: list[Path]) -> tuple[float, np.ndarray]:
        preds, start = [], time.perf_counter()
        for images in image_batches(paths):
            pixels = proc(images=images, return_tensors="np")["pixel_values"]
            preds.append(session.run(None, {"pixel_values": pixels})[0].argmax(1))
        return time.perf_counter() - start, np.concatenate(preds)
    return run


def interleaved(runners: dict, paths: list[Path], chunk: int = 256) -> dict:
    """Each runner over all paths, alternating chunk by chunk, so a burst of load hits both alike."""
    seconds, preds = {k: 0.0 for k in runners}, {k: [] for k in runners}
    for s in range(0, len(paths), chunk):
        for name, run in runners.items():
            t, p = run(paths[s:s + chunk])
            seconds[name] += t
            preds[name].append(p)
    return {k: (seconds[k], np.concatenate(preds[k])) for k in runners}


def print_table(unit: str, batching: str, n: int, helios: dict, torch_run, ort_run, p_helios) -> None:
    """The three contenders' rates, ratios and top-1 agreement with PyTorch, as a Markdown table."""
    (t_torch, p_torch), (t_ort, p_ort) = torch_run, ort_run
    rates = {"helios": n / helios["stages"]["infer"], "pytorch": n / t_torch, "ort": n / t_ort}
    print(f"\n| contender | {unit} | vs PyTorch | vs bare ORT | top-1 agreement with PyTorch |\n|---|---:|---:|---:|---:|")
    print(f"| PyTorch transformers loop, {batching}, {THREADS} threads | {rates['pytorch']:.1f} | 1.00x | "
          f"{rates['pytorch'] / rates['ort']:.2f}x | |")
    print(f"| bare ORT loop, Helios's {helios['variant']} | {rates['ort']:.1f} | {rates['ort'] / rates['pytorch']:.2f}x | "
          f"1.00x | {(p_ort == p_torch).mean():.4f} |")
    print(f"| Helios infer stage ({helios['variant']}) | {rates['helios']:.1f} | {rates['helios'] / rates['pytorch']:.2f}x"
          f" | {rates['helios'] / rates['ort']:.2f}x | {(p_helios == p_torch).mean():.4f} |")


def helios_labels(predictions: Path, paths: list[Path], root: Path, model_dir: Path) -> np.ndarray:
    """Helios's label for each path as the model's class index (its config's label2id)."""
    import pandas as pd

    label2id = json.loads((model_dir / "config.json").read_text())["label2id"]
    frame = pd.read_parquet(predictions).set_index("path")
    return np.array([int(label2id[str(frame.loc[p.relative_to(root).as_posix(), "label"])]) for p in paths])


def bench_image(args) -> None:
    out = Path(args.work)
    model_dir = build_image_model(args.arch, out / f"{args.arch}-model")
    files = out / f"jpegs-{args.n}"
    paths = write_jpegs(files, args.n)
    head = model_dir.parent / f"{model_dir.name}-head" / "head.json"
    print(f"{args.arch}, {len(paths)} JPEGs; {load()}" + (f"; head {head.read_text()}" if head.is_file() else ""),
          flush=True)
    helios = run_helios(model_dir, files, out / f"helios-{args.arch}", args.set)
    print(f"helios done ({helios['variant']}); {load()}", flush=True)
    both = interleaved({"pytorch": torch_images(model_dir), "ort": ort_images(model_dir, helios["onnx"])}, paths)
    (t_torch, p_torch), (t_ort, p_ort) = both["pytorch"], both["ort"]
    print(f"pytorch and bare ORT done; {load()}", flush=True)
    p_helios = helios_labels(helios["predictions"], paths, files, model_dir)
    print_table("img/s", f"batch {BATCH}", len(paths), helios, (t_torch, p_torch), (t_ort, p_ort), p_helios)
    print(f"\nhelios run wall {helios['wall_s']:.1f} s; stages {helios['stages']}")


def bench_image_variants(args) -> None:
    """After ``image``: PyTorch against every ONNX variant the Helios run built, on the first ``--n`` of its JPEGs,
    interleaved in chunks of 64 — what each variant would give, including those the optimize stage rejected."""
    out = Path(args.work)
    model_dir, folder = out / f"{args.arch}-model", out / f"helios-{args.arch}" / "run" / "model"
    folders = sorted(out.glob("jpegs-*"))  # the image run's JPEGs
    paths = sorted(folders[-1].glob("*.jpg"))[:args.n] if folders else []
    variants = sorted(p for p in folder.glob("*.onnx") if p.stem != "model")
    if not paths or not variants:
        raise SystemExit(f"run `bench_hf.py image --arch {args.arch} --work {out}` first (no JPEGs or variants there)")
    print(f"{args.arch}, {len(paths)} JPEGs, variants {[v.stem for v in variants]}; {load()}", flush=True)
    runs = {"pytorch": torch_images(model_dir), **{f"ort {v.stem}": ort_images(model_dir, v) for v in variants}}
    both = interleaved(runs, paths, chunk=64)
    t_torch, p_torch = both["pytorch"]
    print(f"\n| contender | img/s | vs PyTorch | top-1 agreement with PyTorch |\n|---|---:|---:|---:|")
    for name, (t, p) in both.items():
        print(f"| {name} | {len(paths) / t:.2f} | {t_torch / t:.2f}x | {(p == p_torch).mean():.3f} |")
    print(load())


def build_minilm_classifier(dst: Path, texts: list[str], topics: list[str], labels: tuple[str, ...]) -> Path:
    """BertForSequenceClassification from the packaged MiniLM (encoder and pooler) with a head fitted on texts."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from helios.models.quiet import quiet_transformers
    from helios.models.minilm import minilm_path

    src = minilm_path()
    config = BertConfig.from_pretrained(str(src), id2label=dict(enumerate(labels)),
                                        label2id={name: i for i, name in enumerate(labels)})
    config.architectures = ["BertForSequenceClassification"]
    with quiet_transformers():  # the checkpoint has no classifier: fitted below
        model = BertForSequenceClassification.from_pretrained(str(src), config=config).eval()
    tok = AutoTokenizer.from_pretrained(str(src))
    with torch.no_grad():
        pooled = torch.cat([model.bert(**tok(texts[i:i + 64], padding=True, truncation=True, max_length=256,
                                              return_tensors="pt")).pooler_output for i in range(0, len(texts), 64)])
    fit = LogisticRegression(C=10.0, max_iter=2000).fit(pooled.numpy(), [labels.index(t) for t in topics])
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(fit.coef_).float())
        model.classifier.bias.copy_(torch.from_numpy(fit.intercept_).float())
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    shutil.copyfile(src / "sentence_bert_config.json", dst / "sentence_bert_config.json")
    return dst


def bench_text_accuracy(args) -> None:
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from helios.data.demo import write_demo

    out = Path(args.work)
    train_csv = write_demo("text", 400, out / "topics-train", seed=1)
    train = pd.read_csv(train_csv)
    texts = [(train_csv.parent / "files" / p).read_text() for p in train["path"]]
    labels = tuple(sorted(set(train["label"])))
    model_dir = build_minilm_classifier(out / "minilm-topics", texts, list(train["label"]), labels)
    test_csv = write_demo("text", args.n, out / f"topics-test-{args.n}", seed=2)
    print(f"text accuracy: head fitted on 400 demo texts (seed 1), tested on {args.n} others (seed 2); {load()}")
    helios = run_helios(model_dir, test_csv.parent / "files", out / "helios-minilm-topics", ["--labels", str(test_csv)]
                        + args.set)
    test = pd.read_csv(test_csv)
    frame = pd.read_parquet(helios["predictions"]).set_index("path").loc[test["path"]]
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    test_texts = [(test_csv.parent / "files" / p).read_text() for p in test["path"]]
    with torch.no_grad():
        own = np.concatenate([model(**tok(test_texts[i:i + 32], padding=True, truncation=True, max_length=256,
                                          return_tensors="pt")).logits.argmax(1).numpy() for i in range(0, len(test), 32)])
    own_labels = np.array([labels[i] for i in own])
    print(f"| variant | Helios = model's own head | Helios accuracy | own head accuracy |\n|---|---:|---:|---:|")
    print(f"| {helios['variant']} | {(frame['infer_label'].to_numpy() == own_labels).mean():.4f} | "
          f"{(frame['infer_label'].to_numpy() == test['label'].to_numpy()).mean():.4f} | "
          f"{(own_labels == test['label'].to_numpy()).mean():.4f} |")


def build_bert_base(dst: Path, labels: tuple[str, ...]) -> Path:
    """BertForSequenceClassification at BERT-base size (12 layers, hidden 768; random weights) with MiniLM's
    tokenizer (the same uncased WordPiece vocabulary)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from helios.models.minilm import minilm_path

    if (dst / "config.json").is_file():
        return dst
    torch.manual_seed(0)
    config = BertConfig(id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
                        architectures=["BertForSequenceClassification"])
    BertForSequenceClassification(config).eval().save_pretrained(dst)
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(dst)
    return dst


def text_batches(texts: list[str]):
    """Length-sorted batches of ``BATCH`` (as Helios buckets text): (positions, texts) each."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for s in range(0, len(order), BATCH):
        idx = order[s:s + BATCH]
        yield idx, [texts[i] for i in idx]


def torch_texts(model_dir: Path):
    """A plain transformers loop: tokenizer(padding, truncation 256) and model(**batch) in inference mode."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(THREADS)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()

    def run(texts: list[str]) -> tuple[float, np.ndarray]:
        preds, start = np.zeros(len(texts), dtype=np.int64), time.perf_counter()
        with torch.inference_mode():
            for idx, batch in text_batches(texts):
                enc = tok(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
                preds[idx] = model(**enc).logits.argmax(1).numpy()
        return time.perf_counter() - start, preds
    return run


def ort_texts(model_dir: Path, onnx_path: Path):
    """The same ONNX file in a bare ONNX Runtime loop: the same tokenizer and batches, session.run."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    tok = AutoTokenizer.from_pretrained(str(model_dir))

    def run(texts: list[str]) -> tuple[float, np.ndarray]:
        preds, start = np.zeros(len(texts), dtype=np.int64), time.perf_counter()
        for idx, batch in text_batches(texts):
            enc = tok(batch, padding=True, truncation=True, max_length=256, return_tensors="np")
            feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
            preds[idx] = session.run(None, feeds)[0].argmax(1)
        return time.perf_counter() - start, preds
    return run


def bench_text_speed(args) -> None:
    """BERT-base-sized classifier over ``--n`` texts from a Parquet file: Helios vs PyTorch vs bare ORT."""
    import pandas as pd

    from helios.data.demo import write_demo

    out = Path(args.work)
    demo_csv = write_demo("text", args.n, out / f"texts-{args.n}", seed=3)
    demo = pd.read_csv(demo_csv)
    texts = [(demo_csv.parent / "files" / p).read_text() for p in demo["path"]]
    table = out / f"texts-{args.n}.parquet"
    pd.DataFrame({"id": [f"t{i}" for i in range(len(texts))], "text": texts}).to_parquet(table, row_group_size=1000)
    labels = tuple(sorted(set(demo["label"])))
    model_dir = build_bert_base(out / "bert-base", labels)
    print(f"bert-base (12 layers, hidden 768, random weights), {len(texts)} texts from {table.name}; {load()}",
          flush=True)
    helios = run_helios(model_dir, table, out / "helios-bert-base",
                        ["--set", "infer.column=text", "--set", "infer.id_column=id", *args.set])
    print(f"helios done ({helios['variant']}); {load()}", flush=True)
    both = interleaved({"pytorch": torch_texts(model_dir), "ort": ort_texts(model_dir, helios["onnx"])}, texts,
                       chunk=500)
    (t_torch, p_torch), (t_ort, p_ort) = both["pytorch"], both["ort"]
    print(f"pytorch and bare ORT done; {load()}", flush=True)
    frame = pd.read_parquet(helios["predictions"]).set_index("path")
    p_helios = np.array([labels.index(str(frame.loc[f"t{i}", "label"])) for i in range(len(texts))])
    n = len(texts)
    print_table("texts/s", f"batch {BATCH} by length", n, helios, (t_torch, p_torch), (t_ort, p_ort), p_helios)
    print(f"\nhelios run wall {helios['wall_s']:.1f} s ({n / helios['wall_s']:.1f} texts/s whole run); "
          f"stages {helios['stages']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    image = sub.add_parser("image")
    image.add_argument("--arch", choices=("resnet50", "vit-b16"), default="resnet50")
    image.add_argument("--n", type=int, default=2000)
    variants = sub.add_parser("image-variants")
    variants.add_argument("--arch", choices=("resnet50", "vit-b16"), default="resnet50")
    variants.add_argument("--n", type=int, default=192)
    text = sub.add_parser("text-accuracy")
    text.add_argument("--n", type=int, default=1000)
    speed = sub.add_parser("text-speed")
    speed.add_argument("--n", type=int, default=5000)
    for p in (image, variants, text, speed):
        p.add_argument("--work", default="bench-hf-work")
        p.add_argument("--set", action="append", default=[], help="key=value handed to `helios run --set` (repeatable)")
    args = parser.parse_args()
    args.set = [a for kv in args.set for a in ("--set", kv)]
    {"image": bench_image, "image-variants": bench_image_variants, "text-accuracy": bench_text_accuracy,
     "text-speed": bench_text_speed}[args.cmd](args)


if __name__ == "__main__":
    main()
