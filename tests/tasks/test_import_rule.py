"""The style rule that keeps stage logic testable: only a stage's Prefect-facing modules import Prefect; none imports MLflow.

Prefect-facing modules: ``task.py`` (the @task wrappers), and for the infer stage ``runners.py`` (builds the Ray/Dask
task runner) and ``progress.py`` (the Prefect progress artifact).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFECT_FACING = {"task.py", "runners.py", "progress.py"}
STAGE_FILES = sorted(p for p in (ROOT / "tasks").rglob("*.py") if p.name not in PREFECT_FACING)
PURE_PACKAGES = sorted((ROOT / "hardware").glob("*.py")) + sorted((ROOT / "helios" / "models").glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_stage_cores_never_import_prefect_or_mlflow():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & {"prefect", "mlflow", "prefect_ray", "prefect_dask"})
                 for p in STAGE_FILES + PURE_PACKAGES}
    offenders = {k: v for k, v in offenders.items() if v}
    assert len(STAGE_FILES) > 20
    assert offenders == {}


def test_task_wrappers_never_import_mlflow():
    wrappers = sorted(p for p in (ROOT / "tasks").rglob("*.py") if p.name in PREFECT_FACING)
    assert wrappers and all("mlflow" not in imported_roots(p) for p in wrappers)
