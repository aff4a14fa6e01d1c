"""Where seglab keeps things: real datasets (one setting, ``SEGLAB_DATA``) and runs (``runs/``)."""

from __future__ import annotations

import os
from pathlib import Path

# The default folder of run folders (relative to the working directory): runs/<name>/.
RUNS_ROOT = Path("runs")


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


def default_run_dir(name: str) -> Path:
    """The run folder of run ``name`` when none is given: ``runs/<name>``."""
    return RUNS_ROOT / name
