"""``--json``: stdout carries exactly one JSON document, everything else goes to stderr.

Lightning's model summary, progress bars, library prints and native-code output would
otherwise land on stdout before the document and break ``seglab train --json | jq``. While a
verb runs with ``--json``, file descriptor 1 and ``sys.stdout`` point at stderr; the document
itself is written to the real stdout kept aside (:func:`document_stream`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import typer

_document: TextIO | None = None  # the real stdout while a --json verb runs


def document_stream() -> TextIO:
    """Where the JSON document goes: the real stdout (kept aside under ``--json``)."""
    return _document if _document is not None else sys.stdout


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send stdout (Python objects and, for a real process, file descriptor 1) to stderr."""
    global _document
    sys.stdout.flush()
    try:
        fd: int | None = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):  # captured in-process (tests)
        fd = None
    saved = None
    if fd is None:
        _document = sys.stdout
    else:
        saved = os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
        _document = os.fdopen(os.dup(saved), "w")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        _document.flush()
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)
            _document.close()
        _document = None


def _json_parameter(callback: Callable[..., Any]) -> str | None:
    """The name of the verb's ``--json`` option, if it has one."""
    for name, parameter in inspect.signature(callback).parameters.items():
        decls = getattr(parameter.default, "param_decls", None) or ()
        if "--json" in decls:
            return name
    return None


def guard_json_verbs(app: typer.Typer) -> None:
    """Wrap every verb of ``app`` (and its sub-apps) that has ``--json`` with the redirect."""
    for command in app.registered_commands:
        name = _json_parameter(command.callback) if command.callback else None
        if name is None:
            continue
        command.callback = _guarded(command.callback, name)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_json_verbs(group.typer_instance)


def _guarded(callback: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get(name):
            return callback(*args, **kwargs)
        with stdout_to_stderr():
            return callback(*args, **kwargs)

    return run
