"""Where seglab finds real datasets: one setting, ``SEGLAB_DATA``."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path | None:
    """Real-data folder: ``$SEGLAB_DATA``, else ``../shared/data`` if it exists, else None."""
    env = os.environ.get("SEGLAB_DATA")
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None
