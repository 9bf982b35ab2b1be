"""The run index: which shard files are durable and whose results they hold.

One writer: the flow process commits a shard *after* its task returned, and the task returns only after its
Parquet file was fsynced and renamed into place. A shard file that exists but is not in the index (a kill between
rename and commit) is simply recomputed and overwritten under the same deterministic name. This works the same
when shards run on Ray or Dask workers, as long as the run directory is on storage the workers share.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from helios.catalog import RunCatalog


_SCHEMA = """
CREATE TABLE IF NOT EXISTS shards (
    shard_id TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    path TEXT NOT NULL,
    files INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    committed_at REAL NOT NULL
)
"""


class RunIndex:
    """SQLite (WAL, synchronous=FULL) index of committed shards in a run directory."""

    def __init__(self, run_dir: Path | str):
        self.path = RunCatalog(Path(run_dir)).index
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(_SCHEMA)

    def commit(self, shard_id: str, identity: str, path: str, files: int) -> None:
        """Record a durable shard file; a shard recomputed under the same id replaces its row."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, 1, ?)",
                            (shard_id, identity, path, files, time.time()))

    def supersede(self, identity: str) -> None:
        """``--full``: earlier shards of this model stop counting as results to reuse."""
        with self.db:
            self.db.execute("UPDATE shards SET active = 0 WHERE identity = ?", (identity,))

    def committed(self, identity: str) -> list[str]:
        """Paths of active shard files for this model identity, oldest first."""
        rows = self.db.execute("SELECT path FROM shards WHERE identity = ? AND active = 1 ORDER BY committed_at",
                               (identity,))
        return [r[0] for r in rows]

    def close(self) -> None:
        self.db.close()
