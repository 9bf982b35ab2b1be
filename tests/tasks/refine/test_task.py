import ast
from pathlib import Path

import pytest

import tasks.refine as package

ROOT = Path(package.__file__).parent


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_only_the_task_wrapper_imports_prefect_or_mlflow():
    for path in ROOT.glob("*.py"):
        if path.name != "task.py":
            assert not {m for m in imports(path) if m.split(".")[0] in ("prefect", "mlflow")}, path.name


@pytest.mark.parametrize("name,allowed", [
    ("tent.py", {"__future__", "copy", "torch", "tasks.refine.bn_adapt"}),
    ("bn_adapt.py", {"__future__", "typing", "torch"}),
    ("safety.py", {"__future__", "numpy"}),
    ("tta.py", {"__future__", "dataclasses", "typing", "numpy", "scipy"}),
])
def test_algorithm_modules_import_only_torch_or_numpy(name, allowed):
    assert {m for m in imports(ROOT / name) if m.split(".")[0] != "torch"} <= allowed


def test_task_wraps_the_core_without_retries(scan, tmp_path):
    from tasks.refine.config import RefineConfig
    from tasks.refine.task import refine_stage

    assert refine_stage.name == "refine" and refine_stage.retries == 0
    frame, summary = refine_stage.fn(RefineConfig(enabled=False), scan.frame, scan.root, scan.adapter, scan.onnx_path,
                                     tmp_path, ("CPUExecutionProvider",), 1, None)
    assert summary == {"status": "disabled"} and len(frame) == len(scan.frame)
