"""Where a study lives (Optuna storage), folder locks, and which running trials are dead.

Storage: a SQLite file ``study.db`` in the study folder by default; any SQLAlchemy URL
(``postgresql://...``, ``mysql+pymysql://...``) so workers on several machines share a
study; or an Optuna journal file (``journal:PATH`` or a path ending ``.log``/``.journal``).

A trial started by a process is tagged with the host, the process id and start time, and a
heartbeat that a thread refreshes. A RUNNING trial is dead when its process is gone (same
host) or its heartbeat is older than :data:`STALE_AFTER_S` (another host); the next worker
marks it FAIL, so a killed study re-run with the same command goes on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seglab.errors import ConfigError

DB_FILE = "study.db"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
_JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


def storage_url(spec: str | None, study_dir: Path) -> str:
    """The storage address as text: the default SQLite file, a URL, or ``journal:PATH``."""
    if not spec:
        return f"sqlite:///{(study_dir / DB_FILE).resolve()}"
    if "://" in spec:
        return spec
    path = spec.removeprefix("journal:")
    if spec.startswith("journal:") or Path(path).suffix in _JOURNAL_SUFFIXES:
        return f"journal:{Path(path).expanduser().resolve()}"
    raise ConfigError(
        f"storage {spec!r} is neither a SQLAlchemy URL (sqlite:///study.db, postgresql://...) "
        "nor a journal file (journal:PATH, or a path ending .log)"
    )


def open_storage(url: str) -> Any:
    """An Optuna storage for :func:`storage_url`'s text."""
    import optuna  # the optional search extra: imported where a study runs

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # The open-lock (O_EXCL lock file) also works on NFS, where symlink locks may not.
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        # Several local workers write one file: wait for the lock instead of failing at 5 s.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    engine_url = _with_driver(url)
    try:
        return optuna.storages.RDBStorage(engine_url, **kwargs)
    except Exception as exc:  # SQLAlchemy raises many kinds; the message says which
        raise ConfigError(f"cannot open study storage {hide_password(url)}: {exc}") from None


def hide_password(url: str) -> str:
    """``url`` with the password of ``user:password@host`` replaced by ``***``."""
    return re.sub(r"^([a-z0-9+.-]+://[^:/@]*):[^@/]*@", r"\1:***@", url, flags=re.IGNORECASE)


def _with_driver(url: str) -> str:
    """A bare ``postgresql://`` URL names no driver and SQLAlchemy then wants psycopg2;
    use psycopg 3 (the ``seglab[postgres]`` extra) where only it is installed."""
    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql":
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return url
    if importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg{sep}{rest}"
    raise ConfigError(
        f"study storage {hide_password(url)}: no PostgreSQL driver is installed; "
        "pip install 'seglab[postgres]' (psycopg 3) or psycopg2-binary"
    )


@contextlib.contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """An exclusive OS lock (``fcntl.flock``) on ``path``; released when the block ends."""
    import fcntl  # POSIX only: at the top it would stop this module importing on Windows

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """The process start time (clock ticks since boot) from /proc, None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def host_id() -> str:
    """This machine: host name plus boot id (a reboot or another container is another host)."""
    return f"{socket.gethostname()}/{_boot_id()}"


def owner_attrs() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "seglab_host": host_id(),
        "seglab_pid": pid,
        "seglab_pid_start": _start_ticks(pid),
        "seglab_heartbeat": time.time(),
    }


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A recycled pid is another process: compare the start time when it was recorded.
    return start is None or _start_ticks(pid) in (None, start)


def is_dead(attrs: dict[str, Any], now: float | None = None) -> bool:
    """True when the process that runs a trial (its system attrs) is gone."""
    now = time.time() if now is None else now
    if "seglab_pid" not in attrs:
        return False  # not started by seglab: leave it alone
    if attrs.get("seglab_host") == host_id():
        return not _process_alive(int(attrs["seglab_pid"]), attrs.get("seglab_pid_start"))
    return now - float(attrs.get("seglab_heartbeat", now)) > STALE_AFTER_S


def fail_dead_trials(study: Any) -> list[int]:
    """Mark RUNNING trials of dead processes FAIL; returns their numbers."""
    import optuna  # the optional search extra: see open_storage
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_dead(trial.system_attrs):
            continue
        try:
            study._storage.set_trial_user_attr(
                trial._trial_id, "error", "interrupted: its process stopped mid-trial"
            )
            if study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                failed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    return failed


class Heartbeat:
    """Refresh a running trial's heartbeat from a daemon thread until stopped."""

    def __init__(self, storage: Any, trial_id: int, interval_s: float = HEARTBEAT_S) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="seglab-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(Exception):  # a missed beat is harmless; the next one counts
                self.storage.set_trial_system_attr(self.trial_id, "seglab_heartbeat", time.time())
