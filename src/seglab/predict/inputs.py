"""Input discovery for ``predict_paths``: files, folders (recursively), globs and videos."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from seglab.errors import ConfigError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})


@dataclass(frozen=True)
class InputFile:
    """One input and the name its outputs get (relative path without suffix)."""

    path: Path
    name: str
    is_video: bool


def collect_inputs(
    inputs: Iterable[str | os.PathLike], exclude: str | os.PathLike | None = None
) -> list[InputFile]:
    """Expand files, folders (recursively) and globs into a sorted, de-duplicated input list.

    Unsupported files inside folders are ignored; an input that names nothing is an error.
    Files under ``exclude`` (the output folder, when it lies inside an input folder) are
    skipped, so a second run does not predict its own outputs.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[InputFile] = []
    seen: set[Path] = set()
    names: set[str] = set()

    def add(path: Path, name: str) -> None:
        resolved = path.resolve()
        if resolved in seen or (skip is not None and resolved.is_relative_to(skip)):
            return
        seen.add(resolved)
        unique, counter = name, 1
        while unique in names:  # same file name from two folders: keep both
            unique, counter = f"{name}_{counter}", counter + 1
        names.add(unique)
        found.append(InputFile(path, unique, path.suffix.lower() in VIDEO_SUFFIXES))

    for raw in inputs:
        text = os.fspath(raw)
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and _supported(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise ConfigError(f"folder {path} holds no images or videos")
            for file in files:
                add(file, file.relative_to(path).with_suffix("").as_posix())
        elif path.is_file():
            if not _supported(path):
                raise ConfigError(f"{path}: not an image or video file (suffix {path.suffix!r})")
            add(path, path.stem)
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            files = [m for m in matches if m.is_file() and _supported(m)]
            if not files:
                raise ConfigError(f"pattern {text!r} matches no images or videos")
            for file in files:
                add(file, file.stem)
        else:
            raise ConfigError(f"input not found: {path}")
    return found


def _supported(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES
