"""The one safe reader of input files: every stage, and the disk probe, reads the user's files through it.

It applies the scan's safeguards to each read, not only to the walk: regular files only (a FIFO, socket or device is
refused without blocking: ``O_NONBLOCK`` + ``fstat`` on the open descriptor), never a path that leaves the input root
(a symlink to ``/etc/passwd``, ``../..``), and a size cap. What it refuses raises ``RefusedFile`` (a ``ValueError``)
whose message is the reason an error row or review item shows; an unreadable file raises ``OSError``.

The decompression-bomb guard belongs to the decoders, which see the image header (``model.max_image_pixels`` in the
model adapters, the review's own pixel cap): this module hands them bytes.
"""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from typing import Iterable, Iterator

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # infer.max_file_bytes's default
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_SPECIAL = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"))
_DIR_CACHE_LIMIT = 4096


class RefusedFile(ValueError):
    """The file is not read; the message says why (no file content in it)."""


def special_kind(mode: int) -> str | None:
    """'FIFO (named pipe)', 'socket', ... for a special file's mode; None for others."""
    return next((name for test, name in _SPECIAL if test(mode)), None)


def read_fd(fd: int, size: int) -> bytes:
    """The whole file behind ``fd``; asking for one byte more than ``size`` sees EOF in a single read."""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    chunks = [data]
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def common_root(paths: Iterable[str | os.PathLike]) -> str | None:
    """The narrowest directory holding every path (None for none): the root when a caller names none."""
    parents = [os.path.dirname(os.path.abspath(os.fspath(p))) for p in paths]
    return os.path.commonpath(parents) if parents else None


class SafeReader:
    """Reads files under ``root`` (None: anywhere) with the scan's safeguards; cheap to keep for many reads.

    The real path of each parent directory is cached (a walk has few directories and many files), so a file costs
    one ``lstat`` and one ``open`` beyond the read; the last component is opened with ``O_NOFOLLOW`` so a file
    swapped for a symlink after the check is refused rather than followed.
    """

    def __init__(self, root: str | os.PathLike | None, max_bytes: int | None = DEFAULT_MAX_BYTES,
                 setting: str = "infer.max_file_bytes"):
        self.root = os.path.realpath(os.fspath(root)) if root is not None else None
        self.max_bytes = max_bytes
        self.setting = setting
        self._dirs: dict[str, str] = {}

    def resolve(self, path: str | bytes | os.PathLike) -> tuple[str, bool]:
        """(the path to open, whether its last component may be opened with O_NOFOLLOW); RefusedFile if it leaves
        the root."""
        path = os.fsdecode(os.fspath(path))
        if self.root is None:
            return path, False
        path = os.path.abspath(path)
        parent, name = os.path.split(path)
        if name in ("", ".", ".."):
            return self._inside(os.path.realpath(path), path), False
        real_parent = self._dirs.get(parent)
        if real_parent is None:
            if len(self._dirs) >= _DIR_CACHE_LIMIT:
                self._dirs.clear()
            real_parent = self._dirs[parent] = os.path.realpath(parent)
        self._inside(real_parent, path)
        full = os.path.join(real_parent, name)
        try:
            is_link = stat.S_ISLNK(os.lstat(full).st_mode)
        except OSError:
            return full, True  # missing or unreadable: open() says which
        if is_link:
            target = os.path.realpath(full)
            return self._inside(target, path, link=True), False
        return full, True

    def _inside(self, real: str, path: str, link: bool = False) -> str:
        root = self.root
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return real
        shown = real.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        if link:
            raise RefusedFile(f"symlink leaves the input root (points to {shown}): not followed")
        raise RefusedFile(f"path leaves the input root ({shown} is outside {root}): not read")

    @contextmanager
    def open(self, path: str | bytes | os.PathLike) -> Iterator[tuple[int, os.stat_result]]:
        """An open descriptor of the regular file at ``path`` and its stat; RefusedFile or OSError otherwise."""
        target, nofollow = self.resolve(path)
        fd = os.open(target, _OPEN_FLAGS | (getattr(os, "O_NOFOLLOW", 0) if nofollow else 0))
        try:
            st = os.fstat(fd)
            kind = special_kind(st.st_mode)
            if kind or not stat.S_ISREG(st.st_mode):
                raise RefusedFile(f"not a regular file ({kind or 'unknown type'}): not opened")
            yield fd, st
        finally:
            os.close(fd)

    def read(self, path: str | bytes | os.PathLike, limit: int | None = None) -> bytes:
        """The file's bytes; with ``limit``, at most that many (a bounded prefix: no size cap applies)."""
        with self.open(path) as (fd, st):
            if limit is not None:
                return _read_prefix(fd, limit)
            if self.max_bytes is not None and st.st_size > self.max_bytes:
                raise RefusedFile(f"file too large: {st.st_size} bytes exceeds {self.setting}={self.max_bytes}")
            return read_fd(fd, st.st_size)


def _read_prefix(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
