"""Errors a user can fix. The CLI prints them on one line and exits with code 2."""
from __future__ import annotations


class UsageError(Exception):
    """Bad config, a missing input, an unknown model: the message names the value and the fix."""


def error_kind(message: str | None) -> str:
    """The kind of an error row's message, for counting: its text before the first ':' or ' (' (the details that
    follow name the file's own target or value), e.g. 'broken symlink (points to b)' -> 'broken symlink'."""
    kind = str(message or "").split(":", 1)[0].split(" (", 1)[0].strip()
    return kind or "unknown"
