"""Images listed twice: within a split (counted twice) or in two splits (validation scores leak).

``data check`` calls :func:`split_overlaps`; a file is recognised by its resolved path and by
the hash of its bytes (the same photo copied under another name is the same sample).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path


def file_digest(path: Path) -> str | None:
    """SHA-256 of the file's bytes (None when it cannot be read: reported elsewhere)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def split_overlaps(splits: dict[str, Iterable[tuple[Path, Path]]]) -> tuple[list[str], list[str]]:
    """``(problems, warnings)``: one image file in two splits is a problem (its scores leak);
    two files with the same bytes in two splits, or an image listed twice within a split, a
    warning (a copy is very likely a leak, but blank frames can be equal by chance). Joined
    splits (``train+val``) are skipped."""
    by_path: dict[str, list[tuple[str, Path]]] = defaultdict(list)  # resolved -> (split, image)
    for split, pairs in splits.items():
        if "+" in split:
            continue
        for image, _ in pairs:
            try:
                resolved = str(Path(image).resolve())
            except OSError:
                resolved = str(image)
            by_path[resolved].append((split, Path(image)))
    problems, warnings = [], []
    for uses in by_path.values():
        splits_used = sorted({split for split, _ in uses})
        if len(splits_used) > 1:
            problems.append(f"{uses[0][1]} is in splits {', '.join(splits_used)}: its scores on "
                            "the later split leak from training")
        elif len(uses) > 1:
            warnings.append(f"{uses[0][1]} is listed {len(uses)} times in {splits_used[0]}")
    by_bytes: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    for uses in by_path.values():  # one entry per distinct file
        digest = file_digest(uses[0][1])
        if digest is not None:
            by_bytes[digest].append(uses[0])
    for uses in by_bytes.values():
        splits_used = sorted({split for split, _ in uses})
        if len(uses) > 1 and len(splits_used) > 1:
            where = ", ".join(f"{image} [{split}]" for split, image in uses)
            warnings.append(f"files with the same bytes in splits {', '.join(splits_used)}: "
                            f"{where} (a copy of a training image scores as if unseen)")
    return problems, warnings
