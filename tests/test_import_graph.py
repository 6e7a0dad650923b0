"""The product packages import in one direction and without cycles.

A static walk (no code is imported) of every ``import`` in the product packages: module-level,
function-local and ``if TYPE_CHECKING:`` imports alike, relative imports resolved. A cycle hidden by a
function-local or type-only import is still a cycle: it ties two modules together so neither can be
read, tested or moved alone.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = ("depth_core", "depth_store", "collectors", "exchange_sim", "depth_pipeline")

#: Top-level names each package must never import (the layering in docs/architecture.md).
FORBIDDEN_IMPORTS: dict[str, frozenset[str]] = {
    # The pure core: no orchestration, no network, no S3 client, nothing above it.
    "depth_core": frozenset(
        {
            "dagster",
            "dagster_aws",
            "boto3",
            "botocore",
            "websockets",
            "collectors",
            "exchange_sim",
            "depth_pipeline",
        }
    ),
    # The one object store knows nothing of what is stored in it.
    "depth_store": frozenset(
        {"depth_core", "collectors", "exchange_sim", "depth_pipeline", "dagster", "dagster_aws", "websockets"}
    ),
    "collectors": frozenset({"dagster", "dagster_aws", "depth_pipeline", "exchange_sim"}),
    "exchange_sim": frozenset(
        {"dagster", "dagster_aws", "depth_pipeline", "collectors", "depth_store", "boto3"}
    ),
}

#: Cycles known on main and not yet broken: none since issue 16 item 2 (the last, exchange_sim's server with
#: its engines and control API, broken by ``exchange_sim/state.py``'s protocol). Keep it empty: the test
#: fails on any cycle not listed here, and on a listed one that is gone.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


def _module_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in PRODUCT_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


def _imported_names(module: str, path: Path) -> Iterable[tuple[str, int]]:
    """Every dotted name ``module`` imports (``from a import b`` yields ``a`` and ``a.b``), with its line."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:
                yield f"{target}.{alias.name}", node.lineno


def _import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between product modules, top-level names imported per module)."""
    files = _module_files()
    edges: dict[str, set[str]] = {m: set() for m in files}
    top_levels: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for name, _line in _imported_names(module, path):
            top_levels[module].add(name.partition(".")[0])
            target = name
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != module:
                edges[module].add(target)
    return edges, top_levels


def _cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def _describe(component: frozenset[str], edges: dict[str, set[str]]) -> str:
    return "; ".join(f"{m} -> {', '.join(sorted(edges[m] & component))}" for m in sorted(component))


def test_the_walk_sees_every_kind_of_import() -> None:
    """The walker is not vacuous: a function-local, a type-only and a relative import all make edges."""
    edges = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert _cycles(edges) == [frozenset({"a", "b"})]
    edges, _ = _import_graph()
    assert "depth_core.raw_format" in edges["depth_core.validate"]
    assert len(edges) > 50


def test_no_import_cycles_in_the_product_packages() -> None:
    edges, _ = _import_graph()
    cycles = set(_cycles(edges))
    new = [_describe(c, edges) for c in cycles - KNOWN_CYCLES]
    gone = [sorted(c) for c in KNOWN_CYCLES - cycles]
    assert not new, "import cycles:\n" + "\n".join(new)
    assert not gone, f"cycles broken: remove them from KNOWN_CYCLES: {gone}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN_IMPORTS))
def test_layering(package: str) -> None:
    _, top_levels = _import_graph()
    bad = {
        module: sorted(names & FORBIDDEN_IMPORTS[package])
        for module, names in top_levels.items()
        if module.partition(".")[0] == package and names & FORBIDDEN_IMPORTS[package]
    }
    assert not bad, f"{package} imports what it must not: {bad}"
