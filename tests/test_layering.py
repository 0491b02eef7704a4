"""Layers point one way (docs/architecture.md): checked on the import statements of src/.

Every ``import`` and ``from ... import`` in a module counts, including those inside functions and
under ``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

import lossatlas

PACKAGE = Path(lossatlas.__file__).resolve().parent

# Lowest first. A module may import modules of its own layer or of lower layers, never higher.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "seeding", "config", "runtime", "faults", "location", "threads", "allocator"),
    ("data", "models", "params", "optim", "checkpoint", "evaluate", "batchnorm"),
    ("store", "backends", "chunks", "listing", "provenance", "lock", "verify", "claims"),
    ("populations",),
    ("probes", "analysis", "plots"),
    ("execute", "context"),
    ("stages",),
    ("studies",),
    ("report",),
    ("studies.run", "cli", "__init__", "__main__"),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    """``"probes.curvature"`` -> its file, for every module of the package."""
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The package module an absolute ``lossatlas.x.y`` name refers to (longest match)."""
    if name == "lossatlas":
        return "__init__"
    if not name.startswith("lossatlas."):
        return None
    parts = name.split(".")[1:]
    while parts:
        candidate = ".".join(parts)
        if candidate in _modules():
            return candidate
        parts.pop()
    return None


def _imports(module: str) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import of a package module in ``module``."""
    tree = ast.parse(_modules()[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # ``from lossatlas.analysis import ensembles`` imports the submodule.
                target = _resolve(f"{node.module}.{alias.name}") or _resolve(node.module)
                if target:
                    yield target, node.lineno


def _third_party(module: str) -> Iterator[tuple[str, int]]:
    tree = ast.parse(_modules()[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def _layer(module: str) -> int:
    best, index = -1, -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(f"{name}.")) and len(name) > best:
                best, index = len(name), i
    assert index >= 0, f"module {module} is in no layer: add it to LAYERS"
    return index


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_layers_point_one_way() -> None:
    upward = [
        f"{module}:{line} imports {target}"
        for module in _modules()
        for target, line in _imports(module)
        if _layer(target) > _layer(module)
    ]
    assert upward == []


@pytest.mark.parametrize("forbidden", ["store", "execute", "stages", "studies"])
def test_probes_are_instruments_only(forbidden: str) -> None:
    found = [
        f"{module}:{line} imports {target}"
        for module in _modules()
        if _within(module, "probes")
        for target, line in _imports(module)
        if _within(target, forbidden)
    ]
    assert found == []


def test_analysis_never_imports_torch_nn() -> None:
    found = [
        f"{module}:{line} imports {name}"
        for module in _modules()
        if _within(module, "analysis")
        for name, line in _third_party(module)
        if name in {"torch.nn", "torch.func"} or name.startswith("torch.nn.")
    ]
    assert found == []


def test_plots_import_nothing_but_plots() -> None:
    # Plot functions take arrays and result records; they never reach into the library.
    found = [
        f"{module}:{line} imports {target}"
        for module in _modules()
        if _within(module, "plots")
        for target, line in _imports(module)
        if not _within(target, "plots")
    ]
    assert found == []


def test_there_are_no_import_cycles() -> None:
    graph = {module: {t for t, _ in _imports(module) if t != module} for module in _modules()}
    cycles = _strongly_connected(graph)
    assert cycles == [], f"import cycles: {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (each one a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in graph.get(node, ()):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The negative control of the test above: it would catch a cycle if there were one.
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []
