"""The one safe reader (helios/reader.py) and the sites that read through it: the samples of prepare, optimize and
refine (helios/samples.py) and infer's re-read of manifest files (tasks/infer/source.py). Review's items and the
disk probe have their own tests (tests/tasks/review, tests/hardware)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helios.models import load_model
from helios.models.config import ModelConfig
from helios.reader import RefusedFile, SafeReader
from helios.samples import decode_files
from tasks.infer.source import read_file


def png(value: int, size: int = 28) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """An input root with good files next to what real folders hold: links out, a link in, a FIFO, a big file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png(7))
    root = tmp_path / "input"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(png(10))
    (root / "sub" / "b.png").write_bytes(png(20))
    (root / "in.png").symlink_to(root / "sub" / "b.png")
    (root / "out.png").symlink_to(outside / "secret.png")
    (root / "outdir").symlink_to(outside, target_is_directory=True)
    os.mkfifo(root / "pipe.png")
    with open(root / "big.png", "wb") as handle:
        handle.truncate(2_000_000)
    return root


@pytest.mark.parametrize("name, reason", [
    ("out.png", "symlink leaves the input root (points to "),
    ("outdir/secret.png", "path leaves the input root ("),
    ("../outside/secret.png", "path leaves the input root ("),
    ("pipe.png", "not a regular file (FIFO (named pipe)): not opened"),
    ("big.png", "file too large: 2000000 bytes exceeds infer.max_file_bytes=1000000"),
])
def test_refused_files_say_why(hostile, name, reason):
    with pytest.raises(RefusedFile) as refused:
        SafeReader(hostile, max_bytes=1_000_000).read(hostile / name)
    assert str(refused.value).startswith(reason)


def test_files_inside_the_root_are_read_links_included(hostile):
    reader = SafeReader(hostile, max_bytes=1_000_000)
    assert reader.read(hostile / "a.png") == png(10)
    assert reader.read(hostile / "in.png") == png(20)
    assert reader.read(hostile / "big.png", limit=10) == b"\0" * 10  # a bounded prefix has no size cap


def test_a_file_swapped_for_a_link_out_after_the_check_is_not_followed(hostile):
    reader = SafeReader(hostile)
    target, nofollow = reader.resolve(hostile / "a.png")
    assert nofollow  # opened with O_NOFOLLOW: a link put there between the check and the open fails to open
    (hostile / "a.png").unlink()
    (hostile / "a.png").symlink_to(hostile.parent / "outside" / "secret.png")
    with pytest.raises(RefusedFile, match="symlink leaves the input root"):
        reader.read(hostile / "a.png")


def test_samples_skip_what_the_scan_refuses(hostile):
    adapter = load_model(ModelConfig(name="mnist-cnn"))
    noise = np.random.default_rng(0).integers(0, 255, (500, 500), dtype=np.uint8)
    Image.fromarray(noise).save(hostile / "noise.png")  # a real image over the cap below (about 250 kB)
    names = ["a.png", "out.png", "outdir/secret.png", "pipe.png", "noise.png", "in.png"]
    paths = [hostile / n for n in names]
    decoded = list(decode_files(adapter, paths, root=hostile, max_bytes=100_000))
    assert [names[i] for i, _ in decoded] == ["a.png", "in.png"]
    assert np.array_equal(decoded[0][1].value, adapter.preprocess(png(10)).value)
    uncapped = list(decode_files(adapter, paths, root=hostile, max_bytes=1_000_000))
    assert [names[i] for i, _ in uncapped] == ["a.png", "noise.png", "in.png"]


def test_samples_without_a_root_stay_in_the_folder_that_holds_them(hostile):
    """prepare and optimize pass absolute sample paths; their common folder is the root then."""
    adapter = load_model(ModelConfig(name="mnist-cnn"))
    names = ["a.png", "out.png", "pipe.png", "sub/b.png"]
    decoded = list(decode_files(adapter, [hostile / n for n in names]))
    assert [names[i] for i, _ in decoded] == ["a.png", "sub/b.png"]


def test_infer_rereads_manifest_files_through_the_reader(hostile):
    root = str(hostile)
    assert read_file(root, b"a.png", 1_000_000) == png(10)
    for raw, reason in [(b"out.png", "symlink leaves"), (b"outdir/secret.png", "path leaves"),
                        (b"pipe.png", "not a regular file"), (b"big.png", "file too large")]:
        with pytest.raises(ValueError, match=reason):
            read_file(root, raw, 1_000_000)
