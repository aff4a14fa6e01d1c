"""Shared CLI output helpers: one JSON document on stdout, clear errors on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from seglab.io_utils import json_safe

console = Console(stderr=False)
err_console = Console(stderr=True)



def print_json(document: Any) -> None:
    """Print one JSON document to stdout (NaN/inf written as null)."""
    sys.stdout.write(json.dumps(json_safe(document), indent=2, default=str) + "\n")


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
