"""Importing another library's package on first use, with an install hint when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from seglab.errors import ModelError


def require(module: str, install_hint: str) -> ModuleType:
    """``module`` imported, or a ModelError saying how to install it (an optional extra)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelError(install_hint) from exc
