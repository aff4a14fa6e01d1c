"""The package's shape, measured from its own imports: no cycle, the CLI on top, small modules.

Run alone with ``python -m pytest -q tests/test_architecture.py``; it parses the source (nothing
is imported), so it takes well under a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "seglab"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(module: str, path: Path) -> set[str]:
    """seglab modules that ``module`` imports anywhere (functions included, TYPE_CHECKING not)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(base: str, names: list[str]) -> None:
        for name in names:
            candidate = f"{base}.{name}" if base else name
            found.add(candidate if candidate in MODULES else base)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    name = alias.name
                    while name and name not in MODULES:
                        name = name.rpartition(".")[0]
                    if name:
                        found.add(name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    anchor = module.split(".")
                    if not is_package:
                        anchor = anchor[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                if base.split(".")[0] == "seglab":
                    resolve(base, [a.name for a in child.names])
            visit(child)

    visit(tree)
    found.discard(module)
    return {name for name in found if name in MODULES}


GRAPH = {name: _imported(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return result


def test_the_graph_is_read() -> None:
    # Guards the checks below against a parser that silently sees nothing.
    assert len(MODULES) > 40
    assert "seglab.models.registry" in GRAPH["seglab.models.freeze"] | set().union(*GRAPH.values())
    assert any(name.startswith("seglab.cli.") for name in GRAPH["seglab.cli.main"])


def test_cycle_detection_finds_a_planted_cycle() -> None:
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(planted) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_library_never_imports_the_cli() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if not name.startswith("seglab.cli") and name != "seglab.__main__"
        for target in targets
        if target.startswith("seglab.cli")
    )
    assert not offenders, offenders


def test_no_cli_verb_imports_another() -> None:
    shared = {
        "seglab.cli", "seglab.cli.main", "seglab.cli.parse", "seglab.cli.output",
        "seglab.cli.json_mode", "seglab.cli.model_options",
    }
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.startswith("seglab.cli.") and name not in shared
        for target in targets
        if target.startswith("seglab.cli.") and target not in shared
    )
    assert not offenders, offenders


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    where = MODULES[name].relative_to(SRC)
    assert lines <= MAX_LINES, f"{where} has {lines} lines (max {MAX_LINES})"
