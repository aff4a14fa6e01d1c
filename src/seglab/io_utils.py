"""Atomic file writes (a reader never sees a half-written file) and JSON-safe values.

Temporary files and folders are created beside their target (one filesystem, so the final
``rename`` is atomic and never a copy), named ``.<target>.<host>-<pid>.<random>.tmp`` so the
next write can tell a dead writer's leftovers from a live writer's, and given the mode the
user's umask asks for (``tempfile`` creates 0600 files and 0700 folders).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
# Another machine's leftovers (shared filesystem) are removed only when this old.
FOREIGN_STALE_S = 24 * 3600.0
# Folders of older seglab versions (".<name>.<8 random characters>", no owner in the name)
# are removed when this old.
LEGACY_STALE_S = 3600.0
_LEGACY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the set-and-restore fallback
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have: 0666/0777 minus the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def _host() -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())[:32] or "host"


def temp_prefix(target: Path) -> str:
    """The name prefix of this process's temporaries for ``target``."""
    return f".{target.name}.{_host()}-{os.getpid()}."


def _owner_alive(name: str, target: Path) -> bool | None:
    """Whether the writer that created temporary ``name`` (for ``target``) may still run
    (None: it ran on another machine, so its age decides)."""
    rest = name[len(target.name) + 2 :]  # "<host>-<pid>.<random>.tmp"
    owner = rest.split(".", 1)[0]
    host, _, pid = owner.rpartition("-")
    if not pid.isdigit():
        return True  # not one of ours: leave it alone
    if host != _host():
        return None  # another machine: decided by age
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove temporaries for ``target`` left by writers that died (SIGKILL, power loss).

    A temporary of a live process on this machine is kept; one from another machine only
    after :data:`FOREIGN_STALE_S`. Returns the removed paths.
    """
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.glob(f".{target.name}.*{TMP_SUFFIX}"):
        alive = _owner_alive(path.name, target)
        if alive is None:
            with contextlib.suppress(OSError):
                alive = time.time() - path.lstat().st_mtime < FOREIGN_STALE_S
        if alive:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The previous ``target`` stays whole until the new file is complete; the temporary is
    removed on every exit path (exceptions, ``KeyboardInterrupt``). ``fsync=True`` flushes the
    file and the rename to disk (checkpoints: the data must survive a power loss too).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=TMP_SUFFIX, dir=target.parent)
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        os.close(fd)
        yield tmp_path
        if fsync:
            fsync_file(tmp_path)
        os.replace(tmp_path, target)
        if fsync:
            fsync_dir(target.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def _old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def recover_dir(target: str | os.PathLike) -> None:
    """Undo what a writer killed inside :func:`atomic_dir` left: put a set-aside previous
    version back when ``target`` is missing, and remove dead writers' temporaries."""
    target = Path(target)
    old = _old_name(target)
    if old.is_dir():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)  # killed between the two renames: the old one returns
    clean_stale_temps(target)
    prefix = f".{target.name}."
    for path in target.parent.glob(f"{prefix}????????"):
        tail = path.name[len(prefix) :]
        if not (path.is_dir() and set(tail) <= _LEGACY_CHARS) or path.is_symlink():
            continue
        with contextlib.suppress(OSError):
            if time.time() - path.lstat().st_mtime > LEGACY_STALE_S:
                shutil.rmtree(path, ignore_errors=True)


_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15, glibc >= 2.28)
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the system or the filesystem cannot (the caller falls back).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]  # fmt: skip
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; it replaces ``target`` on success.

    There is always a complete ``target`` once one was written: the new folder is swapped in
    with one atomic exchange where Linux offers it; elsewhere the old one is renamed aside
    first and, if the writer dies between the two renames, the next :func:`atomic_dir` (or
    :func:`recover_dir`) puts it back. Dead writers' temporaries are removed on the way in.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=TMP_SUFFIX, dir=target.parent))
    try:
        apply_umask(tmp, directory=True)
        yield tmp
        if target.exists() and _exchange(tmp, target):
            pass  # tmp now holds the previous version, removed below
        elif target.exists():
            old = _old_name(target)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def json_safe(value: Any) -> Any:
    """``value`` made JSON-safe: NaN/inf -> None, tuples -> lists, numpy/torch scalars -> Python.

    JSON has no NaN: undefined scores (e.g. the IoU of an absent class) are written as null so
    every parser reads the document.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return json_safe(value.item())
    return value
