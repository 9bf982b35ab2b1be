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
    ("tta.py", {"__future__", "dataclasses", "typing", "numpy", "scipy", "helios.models.base"}),
])
def test_algorithm_modules_import_only_torch_or_numpy(name, allowed):
    assert {m for m in imports(ROOT / name) if m.split(".")[0] != "torch"} <= allowed


LAZY = {"task.py": "tasks.refine.core", "core.py": "tasks.refine.work"}


def test_no_module_imports_inside_a_function():
    """Except two: the Prefect wrapper imports the core when the task runs, so importing the pipeline loads none of
    the stage (tests/flows/test_library_use.py); the core imports the work (and with it torch) only when its kept
    answers do not answer, and memo imports torch where it saves or loads a torch step."""
    for path in ROOT.glob("*.py"):
        functions = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)]
        nested = [i for f in functions for i in ast.walk(f) if isinstance(i, (ast.Import, ast.ImportFrom))]
        nested = [i for i in nested if not (isinstance(i, ast.ImportFrom) and i.module == LAZY.get(path.name))]
        if path.name == "memo.py":
            nested = [i for i in nested if not (isinstance(i, ast.Import) and i.names[0].name == "torch")
                      and not (isinstance(i, ast.ImportFrom) and i.module == "tasks.refine.ttt")]
        assert not nested, f"{path.name}: imports at lines {[i.lineno for i in nested]}"


def test_the_core_and_its_kept_answers_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, tasks.refine.core; print(sorted(m for m in ('torch', 'scipy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parents[1], timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_package_imports_form_no_circle():
    graph = {p.stem: {m.rsplit(".", 1)[-1] for m in imports(p) if m.startswith("tasks.refine.")} for p in ROOT.glob("*.py")}
    for path in ROOT.glob("*.py"):  # ``from tasks.refine import tta``
        tree = ast.parse(path.read_text())
        graph[path.stem] |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "tasks.refine"
                             for a in n.names}
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, " -> ".join([*trail, name])
        if name not in done:
            for dep in graph.get(name, ()):
                visit(dep, (*trail, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_task_wraps_the_core_without_retries(scan, tmp_path):
    from tasks.refine.config import RefineConfig
    from tasks.refine.context import RefineContext
    from tasks.refine.task import refine_stage

    assert refine_stage.name == "refine" and refine_stage.retries == 0
    ctx = RefineContext(RefineConfig(enabled=False), scan.adapter, scan.onnx_path, tmp_path, ("CPUExecutionProvider",), 1)
    frame, summary = refine_stage.fn(ctx, scan.frame, scan.root, None)
    assert summary == {"status": "disabled"} and len(frame) == len(scan.frame)
