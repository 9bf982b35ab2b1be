"""Errors a user can fix. The CLI prints them on one line and exits with code 2."""
from __future__ import annotations


class UsageError(Exception):
    """Bad config, a missing input, an unknown model: the message names the value and the fix."""
