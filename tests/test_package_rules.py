"""The import rules between the top-level packages (README "Layout"): the service and training
are siblings joined only by the two torch-free contracts, ``bundle/`` (the trained model) and
``eventlog/`` (what the service logs online); ``models/`` is pure torch. Every import counts,
including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = ("bundle", "eventlog", "models", "service", "training")
FORBIDDEN = {
    "service": {"training", "models", "torch"},
    "training": {"service"},
    "bundle": {"service", "training", "models", "eventlog", "torch"},
    "eventlog": {"service", "training", "models", "torch"},
    "models": {"service", "training", "bundle", "eventlog"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level names every ``import`` and ``from ... import`` of a file reaches."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_none_of_its_forbidden_neighbours(package: str) -> None:
    breaches = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {file: names for file, names in breaches.items() if names} == {}


def test_the_rule_reader_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    import torch.nn\n    from service.store import Store\n")
    assert imported_packages(source) == {"torch", "service"}


def test_benchmarks_borrow_nothing_from_the_tests() -> None:
    """Shared factories live in the package they build (``bundle/testing.py``)."""
    borrowing = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "benchmarks").rglob("*.py"))
                 if '"tests"' in path.read_text()
                 or imported_packages(path) & {"tests", "conftest", "helpers"}]
    assert borrowing == []


def module_graph() -> dict[str, set[str]]:
    """Every first-party module -> the first-party modules it imports (lazy imports too)."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names if alias.name in files)
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: from the package the file is in
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    module = ".".join([*base, *([module] if module else [])])
                for alias in node.names:
                    child = f"{module}.{alias.name}"
                    targets.add(child if child in files else module)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in order:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], order[target])
        if low[node] == order[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    assert circles(module_graph()) == []


def test_the_circle_finder_finds_a_lazy_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


MAX_LINES = 400


def test_no_source_file_is_over_400_lines() -> None:
    """A file past it holds more than one responsibility (issue 21): split it by what it does."""
    long = {str(path.relative_to(ROOT)): count
            for folder in (*PACKAGES, "benchmarks", "scripts", "tests")
            for path in sorted((ROOT / folder).rglob("*.py"))
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
