"""Dataset lineage records from a real scan's manifest: digests follow file content, not paths on disk or order."""
from __future__ import annotations

from pathlib import Path

from flows.lineage import RunInputs, dataset_name, digest_rows, manifest_digest, run_datasets, source_uri
from tasks.infer.scan import scan_input


def make_input(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


FILES = {"a/1.txt": b"one", "a/2.txt": b"two", "b/3.txt": b"three"}


def inference_digest(tmp_path: Path, name: str, files: dict[str, bytes]) -> str:
    root = make_input(tmp_path / name / "files", files)
    manifest = scan_input(str(root), tmp_path / f"{name}-run").manifest_path
    [record] = run_datasets(RunInputs(str(root), None), manifest)
    assert record.context == "inference" and record.rows == len(files)
    return record.digest


def test_same_files_anywhere_give_the_same_digest_and_a_changed_file_another(tmp_path):
    first = inference_digest(tmp_path, "x", FILES)
    assert inference_digest(tmp_path, "y", FILES) == first  # another directory, same content
    assert inference_digest(tmp_path, "z", {**FILES, "b/3.txt": b"THREE"}) != first
    assert len(first) == 32


def test_labels_and_sample_records(tmp_path):
    root = make_input(tmp_path / "photos" / "files", FILES)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na/1.txt,x\na/2.txt,y\n\n", encoding="utf-8")
    manifest = scan_input(str(root), tmp_path / "run").manifest_path
    records = run_datasets(RunInputs(str(root), str(labels), ("a/2.txt", "a/1.txt")), manifest)
    by_context = {r.context: r for r in records}
    assert by_context["evaluation"].rows == 2 and by_context["evaluation"].source == labels.resolve().as_uri()
    sample = by_context["optimization"]
    assert sample.rows == 2 and sample.name == "photos/files (optimize sample)"
    assert sample.digest == digest_rows([(r, h) for r, h in zip(["a/1.txt", "a/2.txt"], _hashes(manifest))])


def _hashes(manifest: Path) -> list[str]:
    import pandas as pd

    frame = pd.read_parquet(manifest).set_index("path")
    return [frame.loc["a/1.txt", "content_hash"], frame.loc["a/2.txt", "content_hash"]]


def test_digest_ignores_order():
    rows = [("b", "2"), ("a", "1")]
    assert digest_rows(rows) == digest_rows(reversed(rows))


def test_the_manifest_digest_is_digest_rows_of_its_rows_in_any_order_and_chunking(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = ["z/9.txt", "é/1.txt", "a/2.txt", "日本/3.txt", "a/10.txt", "b/unreadable.txt"]
    hashes = ["h9", "h1", "h2", "h3", "h10", None]  # an unreadable file has no hash
    pq.write_table(pa.table({"path": paths, "content_hash": hashes}), tmp_path / "manifest.parquet")
    expected = digest_rows([(p, h or "") for p, h in zip(paths, hashes)])
    assert manifest_digest(tmp_path / "manifest.parquet", chunk=2) == (expected, 6)
    assert manifest_digest(tmp_path / "manifest.parquet", ["a/2.txt", "é/1.txt"]) == (
        digest_rows([("a/2.txt", "h2"), ("é/1.txt", "h1")]), 2)


def test_sources_never_carry_credentials():
    assert source_uri("s3://AKIAKEY:s3cr3t@bucket/prefix") == "s3://***@bucket/prefix"
    assert "s3cr3t" not in source_uri("https://host/data?sig=s3cr3t&x=1")
    assert source_uri("/tmp/some/dir").startswith("file:///")
    assert dataset_name("s3://user:pw@bucket/photos/2026-11") == "photos/2026-11"
