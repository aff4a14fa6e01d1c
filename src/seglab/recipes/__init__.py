"""The recipes shipped with seglab: training recipes (``*.yaml``) and study files (``studies/``).

They are package data, so a pip-installed seglab has them; in a source checkout ``configs/``
is a link to this folder. ``resolve_recipe("camvid11_lraspp")`` turns a shipped recipe's name
into its file; a path to an existing file is returned as it is, and a missing
``configs/...`` path (a source-checkout path typed where there is no checkout) is looked up
among the shipped files.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from seglab.errors import ConfigError

STUDIES_DIR = "studies"
_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class RecipeInfo:
    """One shipped file: its name (what ``seglab train NAME`` takes), kind, path and the
    description from its leading comments."""

    name: str
    kind: str  # "recipe" or "study"
    path: Path
    description: str

    @property
    def summary(self) -> str:
        """The description's first sentence."""
        return re.split(r"(?<=\.)\s+(?=[A-Z])", self.description, maxsplit=1)[0]

    def to_dict(self) -> dict[str, str]:
        """JSON-safe fields."""
        return {"name": self.name, "kind": self.kind, "path": str(self.path),
                "summary": self.summary, "description": self.description}


def recipes_dir() -> Path:
    """The folder holding the shipped recipes (inside the installed package)."""
    return Path(__file__).resolve().parent


def _summary(path: Path) -> str:
    """The file's leading comment block, joined into one line (its description)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text and not text.startswith("!"):
            lines.append(text)
    return " ".join(lines)


def _folder(kind: str) -> Path:
    if kind == "recipe":
        return recipes_dir()
    if kind == "study":
        return recipes_dir() / STUDIES_DIR
    raise ConfigError(f"unknown recipe kind {kind!r} (expected 'recipe' or 'study')")


def list_recipes(kind: str | None = None) -> list[RecipeInfo]:
    """Shipped recipes (``kind="recipe"``), study files (``"study"``) or both (None), by name."""
    kinds = ("recipe", "study") if kind is None else (kind,)
    found = []
    for each in kinds:
        folder = _folder(each)
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.is_file() and path.suffix in _SUFFIXES:
                found.append(RecipeInfo(path.stem, each, path, _summary(path)))
    return found


def _looks_like_name(text: str) -> bool:
    return os.sep not in text and "/" not in text and not text.endswith(_SUFFIXES)


def resolve_recipe(name_or_path: str | os.PathLike, kind: str = "recipe") -> Path:
    """The file for a path or a shipped name (``camvid11_lraspp``, ``camvid11_lraspp.yaml``).

    An existing file wins over a shipped name. Raises ConfigError naming the closest shipped
    names when neither exists.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    parts = Path(text).parts
    if len(parts) > 1 and parts[0] == "configs":  # a source-checkout path, run elsewhere
        shipped = recipes_dir().joinpath(*parts[1:])
        if shipped.is_file():
            return shipped
    stem = Path(text).stem if text.endswith(_SUFFIXES) and "/" not in text else text
    if _looks_like_name(stem):
        for suffix in _SUFFIXES:
            shipped = _folder(kind) / f"{stem}{suffix}"
            if shipped.is_file():
                return shipped
    names = [info.name for info in list_recipes(kind)]
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    what = "study file" if kind == "study" else "recipe"
    raise ConfigError(
        f"{what} {text!r} is neither a file nor a shipped {what} name{hint} "
        f"(`seglab recipes list` shows the {len(names)} shipped ones)"
    )
