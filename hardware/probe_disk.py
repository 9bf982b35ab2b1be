"""Disk probe: free space and a time-bounded read-bandwidth measurement of the input's filesystem.

Reads existing input files first (that is the data the pipeline will read). If there is no input, or
too little of it to time, it writes a temp file on the same filesystem, fsyncs it, asks the kernel to
drop it from the page cache, and reads it back. `read_mb_s_method` says which happened and whether
the page cache may have served the bytes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from hardware.profile import DiskInfo
from helios.reader import RefusedFile, SafeReader

_CHUNK = 1 << 20
_MIN_EXISTING_BYTES = 8 << 20  # below this the timing is mostly open() overhead and noise
# Bytes written per second of budget: fsync time is not under our control, so keep the file small
# enough that even a slow (~100 MB/s) disk syncs it in a fraction of the budget.
_WRITE_BYTES_PER_SECOND = 32 << 20
_MAX_WRITE = 64 << 20


@dataclass(frozen=True)
class ReadProbe:
    """Outcome of one bandwidth measurement."""

    bytes_read: int
    seconds: float
    method: str

    @property
    def mb_s(self) -> float | None:
        return round(self.bytes_read / self.seconds / 1e6, 1) if self.bytes_read and self.seconds > 0 else None


def probe_disk(input_path: str | Path | None, io_probe_seconds: float) -> tuple[DiskInfo | None, dict[str, str]]:
    """Free space at the input path (or cwd) and its read bandwidth, taking about io_probe_seconds."""
    reasons: dict[str, str] = {}
    target = Path(input_path).expanduser().absolute() if input_path is not None else Path.cwd()
    anchor = _existing_ancestor(target)
    if target != anchor:
        reasons["disk.input"] = f"input path {target} does not exist; measured its nearest parent {anchor}"
    try:
        usage = shutil.disk_usage(anchor)
    except OSError as exc:
        return None, {"disk": f"cannot stat filesystem of {anchor}: {exc}"}
    if io_probe_seconds <= 0:
        probe = ReadProbe(0, 0.0, "skipped")
        reasons["disk.read_mb_s"] = f"I/O probe disabled (io_probe_seconds={io_probe_seconds})"
    else:
        # Without an existing input, never time whatever lies in the cwd or a parent (a venv, or /proc
        # under /): the temp file alone measures the filesystem.
        probe = measure_read_bandwidth(anchor, io_probe_seconds, read_existing=input_path is not None
                                       and target == anchor)
        if probe.mb_s is None:
            reasons["disk.read_mb_s"] = f"nothing could be read or written: {probe.method}"
    return DiskInfo(path=str(anchor), total_bytes=usage.total, free_bytes=usage.free, read_mb_s=probe.mb_s,
                    read_mb_s_method=probe.method if probe.mb_s is not None else None,
                    read_bytes=probe.bytes_read, read_seconds=round(probe.seconds, 4)), reasons


def measure_read_bandwidth(path: Path, seconds: float, read_existing: bool = True) -> ReadProbe:
    """Read `path` (file or tree) until `seconds` pass; fall back to a temp file when it holds too little."""
    deadline = time.perf_counter() + seconds
    if read_existing:
        existing = _read_existing(path, deadline)
        if existing.bytes_read >= _MIN_EXISTING_BYTES or time.perf_counter() >= deadline:
            return existing
    directory = path if path.is_dir() else path.parent
    # Whatever is left of the budget, but never less than a quarter: the fallback must measure something.
    remaining = max(deadline - time.perf_counter(), seconds / 4)
    probe = _temp_file_probe(directory, remaining)
    if read_existing:
        probe = replace(probe, method=f"input holds only {existing.bytes_read} bytes, so {probe.method}")
    return probe


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _iter_files(root: Path, deadline: float):
    """Everything but folders under root, depth-first, stopping at the deadline; unreadable folders are skipped.

    Links are not followed here: the reader decides (a link that stays inside the root is read, others refused)."""
    if not root.is_dir():
        yield root
        return
    stack = [root]
    while stack and time.perf_counter() < deadline:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        yield Path(entry.path)
        except OSError:
            continue  # permission denied on one folder should not end the probe


def _read_existing(root: Path, deadline: float) -> ReadProbe:
    """Time reads of the input's own files, through the scan's safeguards (helios.reader): no FIFO or device is
    opened and no symlink out of the input root is followed, so the probe reads only what the run will read."""
    reader = SafeReader(root if root.is_dir() else root.parent, max_bytes=None)
    buffer = bytearray(_CHUNK)
    total, start = 0, time.perf_counter()
    for file in _iter_files(root, deadline):
        try:
            with reader.open(file) as (fd, _):
                while time.perf_counter() < deadline and (n := os.readv(fd, [buffer])):
                    total += n
        except (OSError, RefusedFile):
            continue
        if time.perf_counter() >= deadline:
            break
    # We cannot tell which of these pages were already cached, and evicting a user's data to find out
    # would slow the real run; so the method says so.
    return ReadProbe(total, time.perf_counter() - start,
                     "existing input files (page cache may serve recently read files at memory speed)")


def _temp_file_probe(directory: Path, seconds: float) -> ReadProbe:
    """Write+fsync a temp file on `directory`'s filesystem, then re-read it, dropping it from the page
    cache before each pass, until `seconds` (counted from the start) are used up."""
    deadline = time.perf_counter() + seconds
    note = ""
    try:
        fd, name = tempfile.mkstemp(prefix=".helios-ioprobe-", dir=directory)
    except OSError as exc:
        note = f"; {directory} not writable ({exc.strerror}), measured {tempfile.gettempdir()} instead"
        try:
            fd, name = tempfile.mkstemp(prefix=".helios-ioprobe-")
        except OSError as exc2:
            return ReadProbe(0, 0.0, f"cannot create a temp file in {directory} or the temp dir: {exc2}")
    try:
        chunks = min(max(int(seconds * _WRITE_BYTES_PER_SECOND), _CHUNK), _MAX_WRITE) // _CHUNK
        block = os.urandom(_CHUNK)  # random bytes: a compressing filesystem cannot shortcut them
        for _ in range(chunks):
            os.write(fd, block)
        os.fsync(fd)  # clean pages only: DONTNEED ignores dirty ones
        total, passes, start = 0, 0, time.perf_counter()
        while True:
            dropped = _drop_page_cache(fd)
            os.lseek(fd, 0, os.SEEK_SET)
            while chunk := os.read(fd, _CHUNK):  # at least one chunk, even if writing used the budget
                total += len(chunk)
                if time.perf_counter() >= deadline:
                    break
            passes += 1
            # Without a cache drop a second pass would only time memory, so stop after one.
            if not dropped or time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    except OSError as exc:
        return ReadProbe(0, 0.0, f"temp-file probe failed in {directory}: {exc}")
    finally:
        os.close(fd)
        os.unlink(name)
    cache = ("posix_fadvise(DONTNEED) before each pass, so reads should come from the device "
             "(a hypervisor's host cache can still serve them)" if dropped
             else "page cache could not be dropped, so this is likely memory speed")
    return ReadProbe(total, elapsed, f"temp file of {chunks} MiB written+fsynced, read {passes}x; {cache}{note}")


def _drop_page_cache(fd: int) -> bool:
    """Ask the kernel to forget the file's clean pages so the read-back comes from the device."""
    if not hasattr(os, "posix_fadvise"):
        return False
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        return False
    return True
