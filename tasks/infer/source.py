"""Where input files come from: a local directory (walked safely) or an fsspec URL.

The walk never follows a symlink out of the root, never loops on symlink cycles and never opens FIFOs, sockets or
devices: each of those becomes an ``Entry`` with an ``error`` instead of a hash. Reading and hashing happen in one
pass over each file. Nothing here imports Prefect.
"""
from __future__ import annotations

import functools
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from helios.reader import SafeReader, read_fd

CHUNK = 1 << 20
_SPECIAL = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"))


@dataclass(frozen=True)
class Entry:
    """One manifest row: ``fs_path`` is the raw relative name (bytes) used to open the file again."""

    path: str
    fs_path: bytes
    size_bytes: int
    mtime: float
    content_hash: str | None
    error: str | None = None
    stat_key: str | None = None  # inode, size, mtime and ctime: unchanged means the hash can be reused


def stat_key(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def new_hasher():
    """The content hash: BLAKE2b-128, fast in pure CPython and collision-safe for deduplication."""
    return hashlib.blake2b(digest_size=16)


def display_name(rel: str) -> str:
    """A printable relative path: bytes that are not UTF-8 (surrogate escapes) are shown as ``\\xNN``."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_remote(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def _special_kind(mode: int) -> str | None:
    return next((name for test, name in _SPECIAL if test(mode)), None)


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


def read_local(full: str | bytes, max_bytes: int | None = None, root: str | None = None) -> bytes:
    """Read a regular file through the safe reader (no FIFO, no symlink out of ``root``, optional size cap).

    Raises OSError (unreadable), or ValueError with a readable reason (not a regular file, outside the root, too
    large).
    """
    return _reader(root, max_bytes).read(full)


@functools.lru_cache(maxsize=8)
def _reader(root: str | None, max_bytes: int | None) -> SafeReader:
    # One reader per root for the life of the process: it caches the real path of each directory it has seen.
    return SafeReader(root, max_bytes)


def hash_local(root: str, rel: str) -> Entry:
    """Stat, read and hash one file in a single pass; failures become an error entry."""
    full = os.path.join(root, rel)
    name, raw = display_name(rel), os.fsencode(rel)
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return Entry(name, raw, 0, 0.0, None, f"unreadable: {_os_reason(exc)}")
    try:
        st = os.fstat(fd)
        kind = _special_kind(st.st_mode)
        if kind or not stat.S_ISREG(st.st_mode):
            return Entry(name, raw, 0, st.st_mtime, None, f"not a regular file ({kind or 'unknown type'}): not opened")
        h = new_hasher()
        if st.st_size < CHUNK:  # small files (nearly all): one read, no 1 MiB buffer per call
            h.update(read_fd(fd, st.st_size))
        else:
            while chunk := os.read(fd, CHUNK):
                h.update(chunk)
        return Entry(name, raw, st.st_size, st.st_mtime, h.hexdigest(), None, stat_key(st))
    except OSError as exc:
        return Entry(name, raw, 0, 0.0, None, f"unreadable: {_os_reason(exc)}")
    finally:
        os.close(fd)


def walk_local(root: str) -> Iterator[tuple[str, str | None, os.stat_result | None]]:
    """Yield ``(relative path, error, stat)`` for every file under ``root``; error is None for files to hash.

    Symlinks are resolved and kept only if they stay inside the root; directories are visited once each (by device
    and inode), which breaks symlink cycles.
    """
    real_root = os.path.realpath(root)
    inside = real_root.rstrip(os.sep) + os.sep
    top = os.stat(real_root)
    seen = {(top.st_dev, top.st_ino)}
    stack = [""]
    while stack:
        prefix = stack.pop()
        try:
            with os.scandir(os.path.join(root, prefix) if prefix else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield prefix.rstrip("/") or ".", f"unreadable directory: {_os_reason(exc)}", None
            continue
        subdirs: list[str] = []
        for entry in entries:
            rel = prefix + entry.name
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if target != real_root and not target.startswith(inside):
                        yield rel, f"symlink leaves the input root (points to {display_name(target)}): not followed", None
                        continue
                    try:
                        st = os.stat(entry.path)
                    except OSError:
                        yield rel, f"broken symlink (points to {display_name(os.readlink(entry.path))})", None
                        continue
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                yield rel, f"unreadable: {_os_reason(exc)}", None
                continue
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) not in seen:  # a cycle or a second link to a visited directory
                    seen.add((st.st_dev, st.st_ino))
                    subdirs.append(rel + "/")
            elif stat.S_ISREG(st.st_mode):
                yield rel, None, st
            else:
                yield rel, f"not a regular file ({_special_kind(st.st_mode) or 'unknown type'}): not opened", None
        stack.extend(reversed(subdirs))  # depth first, in name order: a deterministic manifest order


class StatCache:
    """Hashes of an earlier manifest of the same root, kept in Arrow (not one Python object per file).

    A file whose inode, size, mtime and ctime are unchanged keeps its hash without being read again (as git's
    index does), so an unchanged rerun reads no file.
    """

    def __init__(self, table):
        import pyarrow.compute as pc

        table = table.filter(pc.is_valid(table["content_hash"]))
        self.table = table.select(["path", "fs_path", "size_bytes", "mtime", "content_hash", "stat_key"])

    def lookup(self, raws: list[bytes], keys: list[str]) -> list[Entry | None]:
        import pyarrow as pa
        import pyarrow.compute as pc

        found = self.table.take(pc.index_in(pa.array(raws, pa.binary()), value_set=self.table["fs_path"]))
        cols = [found[c].to_pylist() for c in ("path", "size_bytes", "mtime", "content_hash", "stat_key")]
        return [Entry(p, raw, size, mtime, h, None, old) if old is not None and old == key else None
                for raw, key, p, size, mtime, h, old in zip(raws, keys, *cols)]


def scan_local(root: str, known: StatCache | None = None, batch: int = 50_000) -> Iterator[list[Entry]]:
    """Walk and hash a local directory in batches of entries (memory stays flat however many files).

    Files are hashed one after the other: on small files a thread pool was 4x slower (GIL hand-offs cost
    more than the reads).
    """
    walked: list[tuple[str, str | None, os.stat_result | None]] = []
    for item in walk_local(root):
        walked.append(item)
        if len(walked) >= batch:
            yield _hash_batch(root, walked, known)
            walked = []
    if walked:
        yield _hash_batch(root, walked, known)


def _hash_batch(root: str, walked, known: StatCache | None) -> list[Entry]:
    files = [(rel, st) for rel, error, st in walked if error is None]
    cached = known.lookup([os.fsencode(r) for r, _ in files], [stat_key(st) for _, st in files]) if known else []
    hit = {e.fs_path: e for e in cached if e is not None}
    out = []
    for rel, error, _ in walked:
        if error is not None:
            out.append(Entry(display_name(rel), os.fsencode(rel), 0, 0.0, None, error))
        else:
            out.append(hit.get(os.fsencode(rel)) or hash_local(root, rel))
    return out


def scan_remote(url: str) -> list[Entry]:
    """List and hash files under an fsspec URL (``s3://...`` needs s3fs, and so on)."""
    import fsspec

    try:
        fs, base = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        from helios.errors import UsageError

        raise UsageError(f"cannot open input {url!r} ({exc}): install the fsspec backend for its scheme") from exc
    base = base.rstrip("/")
    out = []
    for path, info in sorted(fs.find(base, withdirs=False, detail=True).items()):
        rel = path[len(base):].lstrip("/")
        mtime = info.get("mtime") or info.get("LastModified") or 0.0
        mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
        try:
            h = new_hasher()
            with fs.open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
            out.append(Entry(rel, rel.encode(), int(info.get("size") or 0), mtime, h.hexdigest()))
        except OSError as exc:
            out.append(Entry(rel, rel.encode(), 0, mtime, None, f"unreadable: {exc}"))
    return out


def read_file(root: str, fs_path: bytes, max_bytes: int) -> bytes:
    """Read one manifest file again for inference (local or fsspec)."""
    if not is_remote(root):
        local_root = root[len("file://"):] if root.startswith("file://") else root
        return read_local(os.path.join(os.fsencode(local_root), fs_path), max_bytes, local_root)
    fs, base = _remote_fs(root)
    path = base.rstrip("/") + "/" + fs_path.decode()
    size = fs.size(path)
    if size is not None and size > max_bytes:
        raise ValueError(f"file too large: {size} bytes exceeds infer.max_file_bytes={max_bytes}")
    return fs.cat_file(path)


@functools.lru_cache(maxsize=8)
def _remote_fs(root: str):
    import fsspec

    return fsspec.core.url_to_fs(root)


def local_root(root: str) -> Path:
    return Path(root[len("file://"):] if root.startswith("file://") else root)
