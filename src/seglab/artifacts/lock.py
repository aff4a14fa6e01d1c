"""One writer per folder: an OS-level lock file (``fcntl`` record lock) that dies with its process.

``with folder_lock(run_dir, "seglab train"):`` takes an exclusive, non-blocking lock on
``run_dir/.seglab.lock``; a second process asking for it gets :class:`FolderLockedError`
naming the folder and the holder's pid. The kernel drops the lock when the holder exits,
however it exits (SIGKILL included), so a stale lock file never blocks anyone. It is a POSIX
record lock (``lockf``), not ``flock``: an ``flock`` is shared with forked children, so the
DataLoader workers of a killed training would hold it until they noticed their parent was
gone; a record lock belongs to the process alone. (Its one catch, that closing any
descriptor of the file drops it, is why this module opens the file once and nothing else
reads it while the lock is held.) One process
may nest locks on the same folder: the nested ones are counted.
A folder the lock created is removed again when it is left empty (a run refused by its
checks leaves nothing behind).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from seglab.errors import ConfigError
from seglab.io_utils import current_umask

LOCK_FILE = ".seglab.lock"

_held: dict[Path, tuple[int, int]] = {}  # resolved folder -> (fd, depth)
_created: set[Path] = set()  # folders a lock created: removed again if left empty
_guard = threading.Lock()


class FolderLockedError(ConfigError):
    """The folder is locked by another process (the message names it and its pid)."""


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``."""
    return Path(folder) / LOCK_FILE


def read_holder(folder: str | os.PathLike) -> str:
    """What the lock file says about its holder (``pid 123 (seglab train) on host``), or ''."""
    try:
        return lock_path(folder).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _open_locked(path: Path) -> int | None:
    """An fd holding the exclusive lock on ``path``, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~current_umask())
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return None
            raise
        except BaseException:
            os.close(fd)
            raise
        # The holder may have removed the file between our open and our lock: we would hold
        # a lock on a deleted inode while a third process locks the new file. Retry then.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, purpose: str = "seglab") -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the block.

    Raises :class:`FolderLockedError` at once when another process holds it.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield lock_path(folder)
        finally:
            _release(key)
        return
    path = lock_path(folder)
    fd = _open_locked(path)
    if fd is None:
        holder = read_holder(folder) or "another process"
        raise FolderLockedError(
            f"{folder} is in use by {holder}: wait for it to finish, or choose another folder"
        )
    if created:
        _created.add(key)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} ({purpose}) on {socket.gethostname()} since "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())  # fmt: skip
    with _guard:
        _held[key] = (fd, 1)
    try:
        yield path
    finally:
        _release(key, path)


def _release(key: Path, path: Path | None = None) -> None:
    with _guard:
        fd, depth = _held[key]
        if depth > 1:
            _held[key] = (fd, depth - 1)
            return
        del _held[key]
    if path is not None:
        # Unlink while still holding the lock (others retry on a changed inode), then unlock.
        with contextlib.suppress(OSError):
            path.unlink()
    with contextlib.suppress(OSError):
        fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    if key in _created:
        _created.discard(key)
        with contextlib.suppress(OSError):  # a check failed before anything was written
            key.rmdir()


def is_locked(folder: str | os.PathLike) -> bool:
    """True when some process (this one included) holds ``folder``'s lock."""
    path = lock_path(folder)
    if not path.is_file():
        return False
    if Path(folder).resolve() in _held:
        return True
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # lockf's exclusive lock needs write
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # also drops the lock just taken
    return False
