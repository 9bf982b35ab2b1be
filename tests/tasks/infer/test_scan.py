"""The scan: safe walk, one-pass hashing, error rows for what must not be opened."""
from __future__ import annotations

import os
import socket
import stat
import threading

import pyarrow.parquet as pq
import pytest

from tasks.infer.scan import read_manifest, scan_input
from tasks.infer.source import new_hasher


def rows(run_dir):
    table, _ = read_manifest(run_dir / "manifest.parquet")
    return {r["path"]: r for r in table.to_pylist()}


def test_manifest_has_path_size_mtime_and_hash(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello")
    (root / "sub" / "b.txt").write_bytes(b"world!")
    result = scan_input(str(root), tmp_path / "run")
    assert (result.files, result.bytes) == (2, 11)
    got = rows(tmp_path / "run")
    h = new_hasher()
    h.update(b"hello")
    assert got["a.txt"]["content_hash"] == h.hexdigest() and got["a.txt"]["size_bytes"] == 5
    assert got["sub/b.txt"]["mtime"] == pytest.approx((root / "sub" / "b.txt").stat().st_mtime)
    assert read_manifest(result.manifest_path)[1] == str(root.resolve())


def test_symlink_leaving_root_is_an_error_row_and_not_followed(tmp_path):
    root, outside = tmp_path / "in", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (outside / "key.txt").write_text("do not read")
    (root / "out_file").symlink_to(outside / "key.txt")
    (root / "out_dir").symlink_to(outside)
    got = rows(tmp_path / "run") if scan_input(str(root), tmp_path / "run") else None
    assert set(got) == {"out_file", "out_dir"}
    assert all("symlink leaves the input root" in r["scan_error"] and r["content_hash"] is None for r in got.values())


def test_symlink_cycles_terminate_and_inside_links_are_kept(tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("x")
    (root / "a" / "loop").symlink_to(root)  # cycle back to the root
    (root / "alias.txt").symlink_to(root / "a" / "f.txt")
    (root / "dangling").symlink_to(root / "missing")
    got = rows(tmp_path / "run") if scan_input(str(root), tmp_path / "run") else None
    assert got["a/f.txt"]["content_hash"] == got["alias.txt"]["content_hash"]
    assert "broken symlink" in got["dangling"]["scan_error"]
    assert not any(p.startswith("a/loop/") for p in got)


def test_fifo_socket_and_device_are_never_opened(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    os.mkfifo(root / "pipe.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "sock.txt"))
    try:
        os.mknod(root / "null.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        has_device = True
    except PermissionError:
        has_device = False
    done = threading.Event()
    t = threading.Thread(target=lambda: (scan_input(str(root), tmp_path / "run"), done.set()), daemon=True)
    t.start()
    assert done.wait(20), "the scan blocked: it opened a FIFO"
    sock.close()
    got = rows(tmp_path / "run")
    assert "FIFO" in got["pipe.png"]["scan_error"] and "not opened" in got["pipe.png"]["scan_error"]
    assert "socket" in got["sock.txt"]["scan_error"]
    if has_device:
        assert "character device" in got["null.png"]["scan_error"]


def test_odd_file_names_survive(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "new\nline.txt").write_text("a")
    (root / "ünïcödé 数字.txt").write_text("b")
    (root / os.fsdecode(b"latin1-\xe9.txt")).write_text("c")
    scan_input(str(root), tmp_path / "run")
    table = pq.read_table(tmp_path / "run" / "manifest.parquet")
    paths = table["path"].to_pylist()
    assert "new\nline.txt" in paths and "ünïcödé 数字.txt" in paths and "latin1-\\xe9.txt" in paths
    assert b"latin1-\xe9.txt" in table["fs_path"].to_pylist()
    assert table["scan_error"].null_count == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_an_error_row(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "locked.png").write_bytes(b"x")
    (root / "locked.png").chmod(0)
    scan_input(str(root), tmp_path / "run")
    assert rows(tmp_path / "run")["locked.png"]["scan_error"] == "unreadable: permission denied"


def test_missing_input_fails_fast(tmp_path):
    from helios.errors import UsageError

    with pytest.raises(UsageError, match="not a directory"):
        scan_input(str(tmp_path / "nope"), tmp_path / "run")


def test_fsspec_url(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.txt").write_text("hello")
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/x/a.txt", b"hello")
    scan_input("memory://bucket/x", tmp_path / "run")
    local = rows(tmp_path / "run")
    scan_input(str(root), tmp_path / "run2")
    assert local["a.txt"]["content_hash"] == rows(tmp_path / "run2")["a.txt"]["content_hash"]


def test_rescan_reuses_hashes_of_unchanged_files_and_sees_changed_ones(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "same.txt").write_text("unchanged")
    (root / "edit.txt").write_text("version 1")
    scan_input(str(root), tmp_path / "run")
    first = rows(tmp_path / "run")
    (root / "edit.txt").write_text("version 2")  # same size: only the stat times and the content differ
    (root / "new.txt").write_text("new")
    scan_input(str(root), tmp_path / "run")
    second = rows(tmp_path / "run")
    assert second["same.txt"]["content_hash"] == first["same.txt"]["content_hash"]
    assert second["edit.txt"]["content_hash"] != first["edit.txt"]["content_hash"]
    assert second["new.txt"]["content_hash"] is not None and len(second) == 3
