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
    """``(problems, warnings)``: an image in two splits is a problem (its scores leak), one
    listed twice in a split a warning. Joined splits (``train+val``) are skipped."""
    seen: dict[str, list[tuple[str, Path]]] = defaultdict(list)  # key -> (split, image)
    for split, pairs in splits.items():
        if "+" in split:
            continue
        for image, _ in pairs:
            try:
                resolved = str(Path(image).resolve())
            except OSError:
                resolved = str(image)
            digest = file_digest(Path(image))
            # One entry per distinct file: its content hash, or its path when unreadable.
            seen[f"sha256:{digest}" if digest else f"path:{resolved}"].append((split, image))
    problems, warnings = [], []
    for key, uses in seen.items():
        if len(uses) < 2:
            continue
        where = ", ".join(f"{image} [{split}]" for split, image in uses)
        how = "the same bytes" if key.startswith("sha256:") else "the same file"
        splits_used = {split for split, _ in uses}
        if len(splits_used) > 1:
            problems.append(f"one image in splits {', '.join(sorted(splits_used))} ({how}): "
                            f"{where}; its scores on the later split leak from training")
        else:
            warnings.append(f"image listed {len(uses)} times in {uses[0][0]} ({how}): {where}")
    return problems, warnings
