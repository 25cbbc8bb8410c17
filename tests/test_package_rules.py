"""The import rules between the top-level packages (README "Layout"): the service and training
are siblings joined only by the two torch-free contracts, ``bundle/`` (the trained model) and
``eventlog/`` (what the service logs online); ``models/`` is pure torch. Every import counts,
including those inside functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.imports import PACKAGES, ROOT, imported_packages, module_graph

FORBIDDEN = {
    "service": {"training", "models", "torch"},
    "training": {"service"},
    "bundle": {"service", "training", "models", "eventlog", "torch"},
    "eventlog": {"service", "training", "models", "torch"},
    "models": {"service", "training", "bundle", "eventlog"},
    # the Python client talks HTTP only: none of the project's packages (tests/imports.py)
    "client": {"bundle", "eventlog", "models", "service", "training", "torch"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_none_of_its_forbidden_neighbours(package: str) -> None:
    breaches = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {file: names for file, names in breaches.items() if names} == {}


def test_the_client_imports_no_project_package_and_nothing_imports_the_client() -> None:
    assert set(FORBIDDEN["client"]) >= set(PACKAGES) - {"client"}
    users = {str(path.relative_to(ROOT)) for package in PACKAGES if package != "client"
             for path in sorted((ROOT / package).rglob("*.py"))
             if "client" in imported_packages(path)}
    assert users == set()


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
