"""The read-bandwidth probe: what it reads, that it stays within its time bound, that it cleans up."""
import time

from hardware.probe_disk import measure_read_bandwidth, probe_disk


def test_reads_existing_input_when_there_is_enough(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"\x01" * (16 << 20))
    probe = measure_read_bandwidth(tmp_path, 0.5)
    assert probe.method.startswith("existing input files")
    assert probe.bytes_read > 0 and probe.mb_s > 0


def test_small_input_falls_back_to_temp_file_and_cleans_up(tmp_path):
    (tmp_path / "tiny.txt").write_text("hello")
    probe = measure_read_bandwidth(tmp_path, 0.2)
    assert "temp file" in probe.method and "input holds only 5 bytes" in probe.method
    assert probe.mb_s > 0
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.txt"]


def test_probe_is_bounded_in_time(tmp_path):
    for budget in (0.1, 0.3):
        start = time.perf_counter()
        measure_read_bandwidth(tmp_path, budget, read_existing=False)
        # the budget plus slack for a shared 2-core machine; fsync of a few MiB is not free
        assert time.perf_counter() - start < budget + 0.5


def test_zero_budget_skips_with_a_reason(tmp_path):
    disk, reasons = probe_disk(tmp_path, 0)
    assert disk.read_mb_s is None and disk.free_bytes > 0
    assert "disabled" in reasons["disk.read_mb_s"]


def test_missing_input_measures_nearest_parent(tmp_path):
    disk, reasons = probe_disk(tmp_path / "not" / "yet", 0.1)
    assert disk.path == str(tmp_path)
    assert "does not exist" in reasons["disk.input"]


def test_reads_only_regular_files_inside_the_input_root(tmp_path):
    """A symlink out of the root (to a big file) and a FIFO are not read: the probe times only the run's data."""
    import os

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"\x02" * (16 << 20))
    root = tmp_path / "input"
    (root / "sub").mkdir(parents=True)
    (root / "small.bin").write_bytes(b"\x01" * 1000)
    (root / "sub" / "inner.bin").write_bytes(b"\x03" * 2000)
    (root / "link-out.bin").symlink_to(outside / "big.bin")
    (root / "link-dir").symlink_to(outside, target_is_directory=True)
    (root / "link-in.bin").symlink_to(root / "sub" / "inner.bin")  # stays inside: read
    os.mkfifo(root / "pipe")  # opening it with a plain open() would block the probe for good
    start = time.perf_counter()
    probe = measure_read_bandwidth(root, 1.0)
    assert time.perf_counter() - start < 1.5
    assert "input holds only 5000 bytes" in probe.method  # 1000 + 2000 + 2000 through the inside link


def test_an_input_that_is_a_symlink_out_of_its_folder_is_not_followed(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\x02" * (16 << 20))
    (tmp_path / "input").mkdir()
    link = tmp_path / "input" / "data.bin"
    link.symlink_to(tmp_path / "secret.bin")
    probe = measure_read_bandwidth(link, 0.3)
    assert "input holds only 0 bytes" in probe.method
