"""RunCatalog: the name of every file of a run directory and of the work directory around it, in one place.

A run directory (``--out``, reused to resume) holds the scan, the infer stage's durable shards, the model variants,
the predictions and the report; its parent, the work directory, holds what runs share: the MLflow store, the LLM
cache and the demo corpus. Every layer finds files through this catalog, never by spelling a name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunCatalog:
    run_dir: Path

    @classmethod
    def at(cls, run_dir: str | Path) -> "RunCatalog":
        return cls(Path(run_dir).resolve())

    def create(self) -> "RunCatalog":
        """Make the run directory (and the work directory above it); return self."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return self

    # --- the run directory
    @property
    def config(self) -> Path:
        return self.run_dir / "config.json"

    @property
    def manifest(self) -> Path:
        return self.run_dir / "manifest.parquet"

    @property
    def index(self) -> Path:
        return self.run_dir / "index.sqlite"

    @property
    def rows(self) -> Path:
        """Table input: each table's item column, copied by the scan into row groups shards read by reference."""
        return self.run_dir / "rows"

    @property
    def todo(self) -> Path:
        return self.run_dir / "todo.parquet"

    @property
    def shards(self) -> Path:
        return self.run_dir / "shards"

    @property
    def workers(self) -> Path:
        """One file per busy shard worker process while the infer stage runs: named by its pid, holding its shard."""
        return self.run_dir / "workers"

    @property
    def predictions(self) -> Path:
        return self.run_dir / "predictions.parquet"

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def gpu_model_dir(self) -> Path:
        """With ``infer.pool=gpu``: the variants the GPU worker builds and selects for its own hardware."""
        return self.run_dir / "model-gpu"

    @property
    def refine_dir(self) -> Path:
        return self.model_dir / "refine"

    @property
    def refine_infer(self) -> Path:
        """The refine stage's re-inference with adapted models: a run directory of its own (manifest subset, shards,
        index), so its results never mix with the infer stage's."""
        return self.run_dir / "refine-infer"

    @property
    def input_copies(self) -> Path:
        """Remote input: the files later stages decode, fetched once."""
        return self.run_dir / "input-copies"

    @property
    def figures(self) -> Path:
        """The report's figures as last drawn, by a key of their data (an unchanged figure is not drawn again)."""
        return self.run_dir / "figures"

    @property
    def report_json(self) -> Path:
        return self.run_dir / "report.json"

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"

    @property
    def variants_csv(self) -> Path:
        return self.run_dir / "variants.csv"

    @property
    def tracked(self) -> tuple[Path, ...]:
        """The files logged to MLflow as the run's artifacts."""
        return (self.predictions, self.manifest, self.report_json, self.report_html, self.variants_csv, self.config)

    # --- the work directory (shared by the runs beside each other)
    @property
    def work_dir(self) -> Path:
        return self.run_dir.parent

    @property
    def mlflow_db(self) -> Path:
        return self.work_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.work_dir / "mlartifacts"

    @property
    def llm_cache(self) -> Path:
        return self.work_dir / "llm-cache"

    @property
    def optimize_failures(self) -> Path:
        """Variants that missed the quality budget, per model, hardware class and recipe: not rebuilt next time."""
        return self.work_dir / "optimize-known-failures.json"

    def drift_baseline(self, job: str) -> Path:
        """The last successful run's answer distribution for the next run of ``job`` on this run directory to compare
        with (``tasks/report/drift.py``)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{job}--{self.run_dir.name}")
        return self.work_dir / "baselines" / f"{safe}.json"

    def demo_dir(self, kind: str, n: int, seed: int) -> Path:
        return self.work_dir / f"demo-{kind}-{n}-{seed}"
