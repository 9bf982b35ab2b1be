"""Progress: a rich bar for people at a terminal (files/s, ETA) and a Prefect progress artifact per shard."""
from __future__ import annotations

import time


class ShardProgress:
    """Advance once per finished shard; keeps the throughput curve for the report."""

    def __init__(self, total_files: int, show_bar: bool, artifact: bool = True, description: str = "infer"):
        self.total, self.done, self.start = total_files, 0, time.perf_counter()
        self.points: list[dict[str, float]] = []
        self._bar = self._task = self._artifact_id = None
        if show_bar and total_files:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]:>8.0f} files/s"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task(description, total=total_files, rate=0.0)
        if artifact and total_files:
            self._artifact_id = _create_artifact(description)

    def __enter__(self) -> "ShardProgress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, files: int) -> None:
        self.done += files
        elapsed = time.perf_counter() - self.start
        self.points.append({"t": round(elapsed, 3), "files": self.done})
        if self._bar is not None:
            self._bar.update(self._task, advance=files, rate=self.done / max(elapsed, 1e-9))
        if self._artifact_id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._artifact_id, progress=100.0 * self.done / self.total,
                                     description=f"{self.done}/{self.total} files inferred")


def _create_artifact(description: str):
    """A progress artifact when running inside a Prefect flow run; None outside one (plain core use)."""
    from prefect.artifacts import create_progress_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    return create_progress_artifact(progress=0.0, key="helios-infer-progress",
                                    description=f"{description}: files inferred so far")
