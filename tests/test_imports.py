"""Import hygiene of the project's packages, read statically (ast): no import cycle, no private name
imported from another module.

Every `import` / `from ... import` counts, at module level or inside a function: a lazy import only hides a
cycle until the function runs, and the layering it breaks is the same. An import of `a.b.c` is an edge to
`a.b.c` alone, not to the packages `a` and `a.b` that Python runs first: a package whose `__init__` imports
its own modules is how a registry gathers its plug-ins (`analysis.runs.tasks`), and those modules may not
import that `__init__` back (that would be a cycle, and is caught).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "explainers", "dashboard", "sample_models")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _imports(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import statement in the module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if _is_package(name) else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            out.extend((base, alias.name, node.lineno) for alias in node.names)
    return out


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, imported, _ in _imports(name, path):
            target = f"{module}.{imported}" if imported and f"{module}.{imported}" in MODULES else module
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_the_checker_sees_a_cycle_and_the_packages():
    assert {"analysis.runs.engine", "explainers.cam", "dashboard.data"} <= set(MODULES)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "analysis.runs.task" in _edges()["analysis.runs.engine"]


def test_no_import_cycle_among_project_modules():
    cycles = _cycles(_edges())
    assert not cycles, "import cycles (module-level or inside functions): " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_name_is_imported_from_another_module(package):
    offenders = []
    for name, path in MODULES.items():
        if name.split(".")[0] != package:
            continue
        for module, imported, line in _imports(name, path):
            if imported and imported.startswith("_") and not imported.startswith("__") and module != name:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: from {module} import {imported}")
    assert not offenders, "\n".join(offenders)


# The layers, lowest first: a package may import its own layer and those below it, never one above.
LAYERS = ("explainers", "sample_models", "analysis", "dashboard")


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {package: i for i, package in enumerate(LAYERS)}
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if rank[target.split(".")[0]] > rank[source.split(".")[0]])


def test_the_layer_checker_sees_an_upward_import():
    assert _upward_imports({"explainers.a": {"sample_models.b"}, "analysis.c": {"explainers.a"}}) == [
        "explainers.a -> sample_models.b"]


def test_no_package_imports_a_layer_above_it():
    """explainers < sample_models < analysis < dashboard, function-level imports included; the CLI starts the
    dashboard as a program (`python -m dashboard.launch`), the model loader finds the sample networks through
    entry points."""
    upward = _upward_imports(_edges())
    assert not upward, "imports up the layers:\n" + "\n".join(upward)
