"""A disk cache of validated LLM answers, so the same request is never billed twice, across runs and processes.

DSPy's own response cache is left off: it is process-global (``dspy.configure_cache`` replaces it for every
caller), lives in the home directory by default and stores pickles, which a file in a shared cache directory could
turn into code execution. Here each answer is one small JSON file named by the SHA-256 of the request.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from helios.files import write_bytes

# Bump when the prompt or the stored record changes, so stale answers are not reused.
CACHE_VERSION = "review-v1"


def request_key(model: str, fingerprint: dict[str, Any]) -> str:
    """SHA-256 of what the provider would receive: model, prompt version and the item's inputs."""
    payload = json.dumps({"v": CACHE_VERSION, "model": model, **fingerprint}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """``get``/``put`` JSON records by request key under ``root``; safe for concurrent writers."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None when absent or unreadable (a damaged entry is a miss, never an error)."""
        try:
            record = json.loads(self._file(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Write atomically: readers see the old entry or the new one, never half a file."""
        write_bytes(json.dumps(record, sort_keys=True).encode("utf-8"), self._file(key))
