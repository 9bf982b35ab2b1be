"""Every kind of bad input gets a row with a reason a person understands, and the good files still get labels."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.infer.plan import merge_predictions, plan_shards
from tasks.infer.scan import read_manifest, scan_input
from tasks.infer.shard import ShardSettings, infer_shard


def run_stage(root: Path, run_dir: Path, ref, before_infer=None, **settings) -> dict[str, dict]:
    """Scan, infer every shard in this process and merge: the stage without Prefect."""
    scan = scan_input(str(root), run_dir)
    manifest, scanned_root = read_manifest(scan.manifest_path)
    if before_infer:
        before_infer()
    specs = plan_shards(manifest, scanned_root, set(), ref.identity, 100, run_dir)
    cfg = ShardSettings(**{"batch_size": 16, "prefetch_batches": 2, **settings})
    outcomes = [infer_shard(spec, ref, cfg) for spec in specs]
    import pyarrow as pa
    import pyarrow.parquet as pq

    results = pa.concat_tables([pq.read_table(o.out_path) for o in outcomes]) if outcomes else None
    from tasks.infer.shard import RESULT_SCHEMA

    merge_predictions(scan.manifest_path, results or RESULT_SCHEMA.empty_table(), run_dir / "predictions.parquet")
    table = pq.read_table(run_dir / "predictions.parquet")
    assert table.num_rows == manifest.num_rows
    return {r["path"]: r for r in table.to_pylist()}


def test_bad_images_get_error_rows(tmp_path, mnist_ref, make_png, make_bomb, make_digits):
    root = tmp_path / "in"
    make_digits(root, 5)
    good = make_png(99)
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "garbage.png").write_bytes(os.urandom(500))
    (root / "letter.jpg").write_text("Dear reader, this is a letter, not a picture.")
    (root / "bomb.png").write_bytes(make_bomb())
    (root / "big.png").write_bytes(make_bomb(2000, 2000))  # under Pillow's limit, over model.max_image_pixels
    (root / "new\nline ünï.png").write_bytes(good)
    rows = run_stage(root, tmp_path / "run", mnist_ref)
    reasons = {p: r["error"] for p, r in rows.items() if r["status"] == "error"}
    assert reasons["empty.png"] == "empty file: zero bytes"
    assert reasons["truncated.png"].startswith("corrupt image")
    assert reasons["garbage.png"].startswith("not an image")
    assert reasons["letter.jpg"].startswith("not an image")
    assert reasons["bomb.png"].startswith("decompression bomb")
    assert "decompression bomb: 2000x2000 pixels exceeds model.max_image_pixels" in reasons["big.png"]
    assert len(reasons) == 6
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 6 and all(r["label"] in "0123456789" and 0 < r["confidence"] <= 1 for r in ok)
    assert all(r["final_stage"] == "infer" and r["infer_label"] == r["label"] for r in ok)
    assert all(r["final_stage"] is None and r["label"] is None for p, r in rows.items() if p in reasons)


def test_files_that_go_wrong_after_the_scan(tmp_path, mnist_ref, make_png, make_digits):
    root = tmp_path / "in"
    make_digits(root, 3)
    (root / "vanishes.png").write_bytes(make_png(101))
    (root / "changes.png").write_bytes(make_png(102))
    (root / "huge.png").write_bytes(make_png(103) + bytes(10_000))  # trailing bytes: still a valid PNG

    def meddle():
        (root / "vanishes.png").unlink()
        (root / "changes.png").write_bytes(make_png(104))

    rows = run_stage(root, tmp_path / "run", mnist_ref, before_infer=meddle, max_file_bytes=5_000)
    assert rows["vanishes.png"]["error"] == "unreadable: no such file or directory"
    assert rows["changes.png"]["error"].startswith("file changed after the scan")
    assert rows["huge.png"]["error"].startswith("file too large: ")
    assert rows["huge.png"]["error"].endswith("bytes exceeds infer.max_file_bytes=5000")
    assert sum(r["status"] == "ok" for r in rows.values()) == 3


def test_special_files_and_escaping_links_are_rows(tmp_path, mnist_ref, make_digits):
    root = tmp_path / "in"
    make_digits(root, 2)
    os.mkfifo(root / "pipe.png")
    (root / "escape.png").symlink_to("/etc/hostname")
    rows = run_stage(root, tmp_path / "run", mnist_ref)
    assert rows["pipe.png"]["status"] == "error" and "FIFO" in rows["pipe.png"]["error"]
    assert rows["escape.png"]["status"] == "error" and "leaves the input root" in rows["escape.png"]["error"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path, mnist_ref, make_digits):
    root = tmp_path / "in"
    make_digits(root, 2)
    (root / "locked.png").write_bytes(b"x")
    (root / "locked.png").chmod(0)
    rows = run_stage(root, tmp_path / "run", mnist_ref)
    assert rows["locked.png"]["error"] == "unreadable: permission denied"


def test_bad_text_is_flagged_or_an_error(tmp_path, minilm_ref):
    root = tmp_path / "in"
    root.mkdir()
    (root / "fine.txt").write_text("The central bank raised interest rates again to fight inflation.")
    (root / "latin1.txt").write_bytes("Le café était fermé après le match de football.".encode("latin-1"))
    (root / "nul.txt").write_bytes(b"The team won the championship\x00\x00 last night.")
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_bytes(b"  \n\t\x00 ")
    (root / "long.txt").write_text("word " * 5000)  # truncated at the model's own max length, not an error
    rows = run_stage(root, tmp_path / "run", minilm_ref)
    assert rows["fine.txt"]["status"] == "ok" and rows["fine.txt"]["flag"] is None
    assert rows["latin1.txt"]["status"] == "ok" and rows["latin1.txt"]["flag"].startswith("not UTF-8")
    assert rows["nul.txt"]["status"] == "ok" and "NUL bytes removed" in rows["nul.txt"]["flag"]
    assert rows["empty.txt"]["error"] == "empty file: zero bytes"
    assert rows["blank.txt"]["error"].startswith("no text")
    assert rows["long.txt"]["status"] == "ok"
    assert rows["fine.txt"]["label"] == "business"
