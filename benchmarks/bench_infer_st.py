"""Baseline: a plain sentence-transformers script over the same text files (what a user writes by hand).

Reads every file, ``model.encode(texts, batch_size=32)``, labels each text by cosine to the same label
descriptions Helios's minilm uses, writes a Parquet file. Prints one JSON line. Driven by bench_infer.py.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer

    from helios.models.minilm import DEFAULT_LABELS, minilm_path

    model = SentenceTransformer(str(minilm_path()), device="cpu")
    label_emb = model.encode(list(DEFAULT_LABELS.values()), normalize_embeddings=True)
    setup_s = time.perf_counter() - t0

    start = time.perf_counter()
    paths = sorted(p for p in Path(args.corpus).rglob("*") if p.is_file())
    texts = [p.read_bytes().decode("utf-8", errors="replace") for p in paths]
    emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
    sims = emb @ label_emb.T
    labels = np.asarray(list(DEFAULT_LABELS))[sims.argmax(1)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"path": [str(p.relative_to(args.corpus)) for p in paths], "label": labels.tolist()}),
                   out / "predictions.parquet")
    total = time.perf_counter() - start
    print(json.dumps({"files": len(paths), "stage_s": round(total, 2), "files_per_s": round(len(paths) / total, 1),
                      "setup_s": round(setup_s, 2), "torch_threads": __import__("torch").get_num_threads(),
                      "pid": os.getpid(), "predictions": str(out / "predictions.parquet")}))


if __name__ == "__main__":
    main()
