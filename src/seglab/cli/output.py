"""Shared CLI output helpers: one JSON document on stdout, clear errors on stderr."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console(stderr=False)
err_console = Console(stderr=True)


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf: write them as null so every consumer can parse the document.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def print_json(document: Any) -> None:
    """Print one JSON document to stdout (NaN/inf written as null)."""
    sys.stdout.write(json.dumps(_clean(document), indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a plain-words error to stderr and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def print_wide(renderable: Any, width: int = 170) -> None:
    """Print a wide table; piped output (files, CI logs) would otherwise be cut to 80 columns."""
    if console.is_terminal:
        console.print(renderable)
        return
    saved = console.width
    console.width = width
    try:
        console.print(renderable)
    finally:
        console.width = saved
