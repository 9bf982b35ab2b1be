"""Tables as input, without Prefect: image bytes and image paths in a column, a table behind an fsspec URL, and
shards reading their rows by reference (only the row groups they need)."""
from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.infer.plan import plan_shards
from tasks.infer.scan import read_manifest, scan_input
from tasks.infer.shard import ShardSettings, infer_shard
from tasks.infer.table import ROWS_GROUP, RowReader, TableSpec, row_ref


def run_shard(root: str, out, ref, spec: TableSpec):
    scan = scan_input(root, out, spec)
    manifest, src = read_manifest(scan.manifest_path)
    [shard] = plan_shards(manifest, src, set(), ref.identity, 1000, out)
    outcome = infer_shard(shard, ref, ShardSettings(batch_size=4))
    return scan, outcome, pq.read_table(shard.out_path)


def test_image_bytes_and_image_paths_in_a_column(tmp_path, mnist_ref, make_png, make_digits):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"img": [make_png(i) for i in range(5)] + [b"not an image"]}), data / "bytes.parquet")
    make_digits(data / "pics", 4)
    (data / "paths.csv").write_text("file\n" + "\n".join(f"pics/d{i:04d}.png" for i in range(4)) + "\nmissing.png\n")
    scan, outcome, _ = run_shard(str(data / "bytes.parquet"), tmp_path / "r1", mnist_ref, TableSpec("img", None, "image"))
    assert scan.files == 6 and (outcome.ok, outcome.error) == (5, 1)
    scan, outcome, _ = run_shard(str(data / "paths.csv"), tmp_path / "r2", mnist_ref, TableSpec("file", None, "image"))
    manifest = pq.read_table(scan.manifest_path).to_pylist()
    assert [r["path"] for r in manifest] == [f"paths.csv#{i}" for i in range(5)]
    assert manifest[4]["scan_error"].startswith("unreadable: image 'missing.png'")
    assert (outcome.ok, outcome.error) == (4, 0)  # the missing image is a scan error row, never sent to a shard
    # a same-content image as bytes and as a path has one hash: one result serves both
    assert manifest[0]["content_hash"] == pq.read_table(tmp_path / "r2" / "manifest.parquet")["content_hash"][0].as_py()


def test_a_table_behind_an_fsspec_url(tmp_path, minilm_ref):
    fs = fsspec.filesystem("memory")
    with fs.open("/bucket/docs/t.jsonl", "wb") as fh:
        fh.write(b'{"text": "stock markets fell", "id": 7}\n{"text": "the team won the match", "id": 8}\n')
    scan, outcome, _ = run_shard("memory://bucket/docs/t.jsonl", tmp_path / "r", minilm_ref, TableSpec("text", "id"))
    assert pq.read_table(scan.manifest_path)["path"].to_pylist() == ["7", "8"] and outcome.ok == 2


def test_row_reader_reads_only_its_rows_row_groups(tmp_path):
    from tasks.infer.table import rows_file

    n = 2 * ROWS_GROUP + 5
    with pq.ParquetWriter(rows_file(tmp_path, 0), pa.schema([("value", pa.binary())])) as writer:
        writer.write_table(pa.table({"value": pa.array([str(i).encode() for i in range(n)], pa.binary())}),
                           row_group_size=ROWS_GROUP)
    refs = [row_ref(0, r) for r in (3, ROWS_GROUP + 1, n - 1)]
    reader = RowReader(str(tmp_path), refs)
    assert [reader.read(r, None) for r in refs] == [b"3", str(ROWS_GROUP + 1).encode(), str(n - 1).encode()]
    assert len(reader.values) == 3  # a row group's other rows are not kept
