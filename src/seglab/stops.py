"""Clean stops: Ctrl-C (SIGINT) and SIGTERM (a preempted job) end a verb with one line.

Inside :func:`catch_stops` a stop signal raises :class:`Stopped` (a ``BaseException``, like
``KeyboardInterrupt``, so ``except Exception`` never swallows it); the CLI prints its message
and exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM) without a traceback. With
``defer=True`` (training) the signal is only recorded: the training loop saves a checkpoint at
the next step boundary and raises :class:`Stopped` itself, naming how to resume. A second
signal while a stop is pending stops at once. DataLoader workers (forked children) ignore the
signal: the main process stops and shuts them down, instead of dying on a killed worker.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending: int | None = None  # a signal received while a deferring section runs
_defer_depth = 0
_owner_pid: int | None = None


class Stopped(BaseException):  # noqa: N818 - named like KeyboardInterrupt, what it stands for
    """A run ended by SIGINT or SIGTERM; ``exit_code`` is ``128 + signum``."""

    def __init__(self, signum: int, message: str = "") -> None:
        self.signum = int(signum)
        self.message = message or f"stopped by {signal_name(signum)}"
        super().__init__(self.message)

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal (130, 143)."""
        return 128 + self.signum


def signal_name(signum: int) -> str:
    """``SIGINT`` / ``SIGTERM`` (``Ctrl-C`` is SIGINT)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _handler(signum: int, frame: Any) -> None:
    global _pending
    if os.getpid() != _owner_pid:
        return  # a forked DataLoader worker: the main process stops and shuts it down
    if _defer_depth and _pending is None:
        _pending = signum
        return
    raise Stopped(signum)


def ignore_in_worker(worker_id: int | None = None) -> None:
    """In a DataLoader worker (usable as its ``worker_init_fn``): ignore SIGINT/SIGTERM sent to
    the whole process group (torch's worker handler would die on SIGTERM and fail the main
    process with a worker traceback); the main process stops and shuts its workers down."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def pending() -> int | None:
    """The stop signal received while a deferring section ran (None: keep going)."""
    return _pending


def clear_pending() -> None:
    """Forget a recorded stop (once it has been acted on)."""
    global _pending
    _pending = None


def install_handler(signum: int) -> None:
    """Put seglab's handler back on ``signum`` (after a library replaced it)."""
    if threading.current_thread() is threading.main_thread() and _owner_pid is not None:
        signal.signal(signum, _handler)


@contextmanager
def catch_stops(defer: bool = False) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :class:`Stopped` for the block (``defer``: only record them,
    see the module docstring). Nests; the previous handlers come back on exit. Outside the
    main thread signals cannot be caught, and the block runs unchanged."""
    global _defer_depth, _owner_pid
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    owner = _owner_pid
    _owner_pid = os.getpid()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
    if defer:
        _defer_depth += 1
    try:
        yield
    finally:
        if defer:
            _defer_depth -= 1
        _owner_pid = owner
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
