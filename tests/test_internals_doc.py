"""``docs/internals.md`` is a map that cannot drift from the code.

Its "How to add" recipes are the docstrings of the rows of ``tests/test_extension_points.py``
(read with ``ast``, nothing imported), its layer table is the floors of the import graph
``tests/test_architecture.py`` reads, every ``seglab.x.y`` name it writes imports, every
source path it writes exists, it stays short, and it describes what is, not its history.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from test_architecture import GRAPH

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "internals.md"
ROWS = ROOT / "tests" / "test_extension_points.py"
MAX_LINES = 250
# The kinds of extension point a row must exist for (a lost row must not pass unnoticed).
KINDS = ("a data format", "a model", "a head", "a CLI verb", "a loss", "a metric")

RECIPE_START = "How to add "
DOTTED = re.compile(r"(?<![\w./-])seglab(?:\.[A-Za-z_]\w*)+")
# Source paths: seglab/..., src/seglab/..., tests/..., docs/... or any a/b.py (relative to
# src/seglab/). Run-folder paths (checkpoints/best.ckpt, fold_<i>/) name neither and are left.
PATH = re.compile(
    r"(?<![\w./<>-])(?:(?:src/)?seglab/[\w./<>-]*|(?:tests|docs)/[\w./<>-]+"
    r"|[\w<>-]+(?:/[\w<>-]+)*/[\w<>-]+\.py)"
)
FLOOR_ROW = re.compile(r"^\| (\d+) \| ([^|]+) \|", re.MULTILINE)
HISTORY = re.compile(r"\b(?:was|were|used to|no longer|formerly|nowadays|now)\b"
                     r"|\b(?:19|20)\d\d-\d\d-\d\d\b|\bissue \d+", re.IGNORECASE)


def _normalised(text: str) -> str:
    return " ".join(text.split())


def _title(recipe: str) -> str:
    """``How to add a loss: ...`` -> ``How to add a loss``."""
    return recipe.split(":", 1)[0]


def row_recipes(source: str) -> dict[str, tuple[str, str]]:
    """The "How to add" docstrings of the test functions in ``source``: title -> (test, text)."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            doc = ast.get_docstring(node)
            if doc and doc.startswith(RECIPE_START):
                found[_title(doc)] = (node.name, _normalised(doc))
    return found


def doc_recipes(text: str) -> dict[str, str]:
    """The paragraphs of the doc that start with "How to add": title -> text."""
    paragraphs = re.split(r"\n\s*\n", text)
    return {_title(p.strip()): _normalised(p) for p in paragraphs
            if p.strip().startswith(RECIPE_START)}


def recipe_mismatches(rows: dict[str, tuple[str, str]], doc: dict[str, str]) -> list[str]:
    """One line per row whose recipe the doc lacks or spells otherwise, and per doc recipe
    that no row tests."""
    problems = []
    for title, (test, text) in sorted(rows.items()):
        if title not in doc:
            problems.append(f"{title!r} (row {test}) is missing from {DOC.name}")
        elif doc[title] != text:
            problems.append(f"{title!r} in {DOC.name} differs from the docstring of {test}")
    problems += [f"{title!r} in {DOC.name} has no row in {ROWS.name}"
                 for title in sorted(set(doc) - set(rows))]
    return problems


def unresolved_name(name: str) -> str | None:
    """None when ``name`` is an importable module or an attribute of one; else why not."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            target = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                return f"{name}: importing {module_name} fails ({exc})"
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return f"{name}: {'.'.join(parts[:cut])} has no attribute {attribute!r}"
            target = getattr(target, attribute)
        return None
    return f"{name}: no such module"


def path_target(written: str) -> Path:
    """The file or folder a path written in the doc names; for a template
    (``seglab/models/<name>.py``) the folder the new file goes in."""
    written = written.rstrip(".")
    if "<" in written:
        written = written[: written.index("<")].rpartition("/")[0]
    if written.startswith("seglab/"):
        return ROOT / "src" / written
    if written.startswith(("src/", "tests/", "docs/")):
        return ROOT / written
    return ROOT / "src" / "seglab" / written


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module imports -> imports between seglab's top-level modules and packages
    (``seglab.engine.fitting`` counts as ``seglab.engine``; ``seglab`` is the package face)."""
    def unit(module: str) -> str:
        return ".".join(module.split(".")[:2])

    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        units.setdefault(unit(module), set()).update(unit(t) for t in targets)
    return {name: targets - {name} for name, targets in units.items()}


def floors(units: dict[str, set[str]]) -> dict[str, int]:
    """Each unit's floor: 1 when it imports no other unit, else one above its highest import."""
    found: dict[str, int] = {}

    def floor(name: str, path: tuple[str, ...]) -> int:
        if name in path:
            raise ValueError("units import each other: " + " -> ".join((*path, name)))
        if name not in found:
            found[name] = 1 + max((floor(t, (*path, name)) for t in units[name]), default=0)
        return found[name]

    for name in sorted(units):
        floor(name, ())
    return found


def doc_floors(text: str) -> dict[str, int]:
    """The layer table of the doc: ``seglab.<module>`` -> the floor its row names."""
    written: dict[str, int] = {}
    for number, cell in FLOOR_ROW.findall(text):
        for token in re.findall(r"`([^`]+)`", cell):
            name = token.rstrip("/")
            written["seglab" if name == "__init__" else f"seglab.{name}"] = int(number)
    return written


def test_the_layer_table_is_the_import_graph() -> None:
    measured = floors(unit_graph(GRAPH))
    written = doc_floors(DOC.read_text(encoding="utf-8"))
    problems = [f"{name} is on floor {measured[name]}, the table says {written.get(name)}"
                for name in sorted(measured) if written.get(name) != measured[name]]
    problems += [f"{name} is in the table but is no module" for name in written
                 if name not in measured]
    assert not problems, "\n".join(problems)


def test_floors_are_counted_and_a_loop_is_refused() -> None:
    graph = {"seglab.cli.main": {"seglab.engine.fitting"}, "seglab.engine.fitting":
             {"seglab.engine.run_plan", "seglab.paths"}, "seglab.engine.run_plan": {"seglab.paths"},
             "seglab.paths": set()}
    assert floors(unit_graph(graph)) == {"seglab.cli": 3, "seglab.engine": 2, "seglab.paths": 1}
    assert doc_floors("| 2 | `engine/`, `__init__` (face) | x |\n| 1 | `paths` | y |") == {
        "seglab.engine": 2, "seglab": 2, "seglab.paths": 1}
    with pytest.raises(ValueError, match="units import each other"):
        floors({"seglab.a": {"seglab.b"}, "seglab.b": {"seglab.a"}})


def test_every_kind_has_a_row_with_its_recipe() -> None:
    rows = row_recipes(ROWS.read_text(encoding="utf-8"))
    missing = [kind for kind in KINDS if f"{RECIPE_START}{kind}" not in rows]
    assert not missing, f"{ROWS.name} has no row whose docstring is 'How to add' {missing}"


def test_each_how_to_add_equals_its_row_docstring() -> None:
    rows = row_recipes(ROWS.read_text(encoding="utf-8"))
    problems = recipe_mismatches(rows, doc_recipes(DOC.read_text(encoding="utf-8")))
    assert not problems, "\n".join(problems)


def test_a_changed_or_missing_recipe_is_named() -> None:
    rows = {"How to add a loss": ("test_loss_row", "How to add a loss: write it.")}
    assert recipe_mismatches(rows, {}) == [
        f"'How to add a loss' (row test_loss_row) is missing from {DOC.name}"]
    changed = doc_recipes("intro\n\nHow to add a loss: write   it\nthere.\n\nend")
    assert recipe_mismatches(rows, changed) == [
        f"'How to add a loss' in {DOC.name} differs from the docstring of test_loss_row"]
    same = doc_recipes("How to add a loss: write\n   it.")
    assert recipe_mismatches(rows, same) == []


def test_every_dotted_seglab_name_resolves() -> None:
    names = sorted(set(DOTTED.findall(DOC.read_text(encoding="utf-8"))))
    assert len(names) > 20  # the pattern reads the doc
    problems = [p for p in map(unresolved_name, names) if p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("name", "why"),
    [("seglab.engine.run_plan.NoSuchPlan", "has no attribute 'NoSuchPlan'"),
     ("seglab.no_such_module.thing", "seglab has no attribute 'no_such_module'")],
)
def test_a_wrong_name_is_reported(name: str, why: str) -> None:
    problem = unresolved_name(name)
    assert problem is not None and why in problem


def test_every_source_path_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    written = sorted(set(PATH.findall(text)))
    assert "tests/test_extension_points.py" in written and len(written) > 15
    missing = [path for path in written if not path_target(path).exists()]
    assert not missing, f"paths in {DOC.name} that do not exist: {missing}"


def test_paths_are_read_from_the_text() -> None:
    text = ("``seglab/models/<name>.py`` `cli/main.py` `src/seglab/metrics/` "
            "`checkpoints/best.ckpt` `.seglab.lock` `tests/x_test.py`")
    found = PATH.findall(text)
    assert found == ["seglab/models/<name>.py", "cli/main.py", "src/seglab/metrics/",
                     "tests/x_test.py"]
    assert path_target(found[0]) == ROOT / "src" / "seglab" / "models"
    assert not path_target(found[3]).exists()
    assert DOTTED.findall("`seglab.paths.RUNS_ROOT`, `.seglab.lock`, seglab train") == [
        "seglab.paths.RUNS_ROOT"]


def test_the_map_is_short() -> None:
    lines = len(DOC.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{DOC.name} has {lines} lines (max {MAX_LINES})"


def test_the_map_tells_what_is_not_its_history() -> None:
    found = [f"line {number}: {match.group(0)!r}"
             for number, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1)
             for match in HISTORY.finditer(line)]
    assert not found, f"{DOC.name} reads as a change log: {found}"
