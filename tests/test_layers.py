"""The layering rule, with no exceptions: each layer imports only the layers below it, and nothing imports in a circle.

    helios/cli/  (commands: parse arguments and files into the typed config, print results)
      -> flows/  (all Prefect composition, MLflow tracking, PipelineConfig)
        -> tasks/<stage>/  (pure stage cores + thin @task wrappers, one config each)
          -> foundation: helios/ (models, data, files, catalog, errors, settings) and hardware/

Imports inside functions count the same as those at the top of a file. Prefect is used by flows/, the CLI and the
``task.py`` wrappers of tasks/; MLflow by flows/ and the CLI only.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("helios", "flows", "tasks", "hardware")
LAYER_NAMES = {0: "foundation (helios/, hardware/)", 1: "tasks/", 2: "flows/", 3: "the CLI (helios/cli/)"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def layer(module: str) -> int:
    if module == "helios.cli" or module.startswith("helios.cli."):
        return 3
    return {"flows": 2, "tasks": 1}.get(module.split(".")[0], 0)


def imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file (project modules resolved to the module, not the name in it)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return found


GRAPH = {name: {m for m in imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_every_package_is_seen():
    assert {layer(m) for m in MODULES} == {0, 1, 2, 3}
    assert len(MODULES) > 80


def test_no_import_from_a_higher_layer():
    upward = sorted(f"{m} ({LAYER_NAMES[layer(m)]}) imports {dep} ({LAYER_NAMES[layer(dep)]})"
                    for m, deps in GRAPH.items() for dep in deps if layer(dep) > layer(m))
    assert upward == []


def test_no_import_circle():
    """Tarjan's strongly connected components: any component of two or more modules is a circle."""
    index, low, stack, on_stack, circles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert circles == []


def third_party(module: str) -> set[str]:
    return {m.split(".")[0] for m in imports(MODULES[module])}


def test_prefect_only_in_flows_cli_and_task_wrappers():
    wrapper = {m for m in MODULES if layer(m) == 1 and m.endswith(".task")}
    offenders = sorted(m for m in MODULES if layer(m) < 2 and m not in wrapper
                       and {"prefect", "prefect_ray", "prefect_dask"} & third_party(m))
    assert offenders == []
    assert all("prefect" in third_party(m) for m in wrapper)


def test_mlflow_only_in_flows_and_cli():
    assert sorted(m for m in MODULES if "mlflow" in third_party(m) and layer(m) < 2) == []
