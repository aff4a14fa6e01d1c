"""A throw-away PostgreSQL server for tests: ``initdb`` a cluster in a temporary folder,
start it with ``pg_ctl`` on a Unix socket in that folder and on 127.0.0.1 at a free port,
create one database, and stop and delete everything at the end.

The server refuses to run as root, so under root the cluster folder is given to an
unprivileged account (``postgres`` where the Debian package made one, else ``nobody``) and
the server binaries run as it. Only loopback and the Unix socket are addressed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "seglab"
DATABASE = "seglab_test"


_NEEDED = ("initdb", "pg_ctl", "createdb", "psql")


def find_bin_dir() -> Path | None:
    """The folder with ``initdb``, ``pg_ctl``, ``createdb`` and ``psql``: Debian's newest
    version folder, else the one ``pg_ctl`` on PATH resolves to (symlinks followed)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all((folder / name).is_file() for name in _NEEDED):
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists")


@dataclass
class PostgresServer:
    """A running cluster: ``url`` is the SQLAlchemy address of its database over 127.0.0.1."""

    root: Path
    port: int
    version: str
    bin_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"


@contextlib.contextmanager
def postgres_server(bin_dir: Path) -> Iterator[PostgresServer]:
    """Start a private cluster with the binaries in ``bin_dir``; stop and delete it after."""
    account = _server_account()
    # Not under pytest's tmp_path: that is private to root, which the server account
    # could not enter.
    root = Path(tempfile.mkdtemp(prefix="seglab-pg-"))
    data, sockets, log = root / "data", root / "socket", root / "server.log"
    sockets.mkdir()
    as_server: dict = {}
    if account is not None:
        for path in (root, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
        as_server = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def server_cmd(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), capture_output=True, text=True, cwd=root, timeout=120,
                              **as_server)  # fmt: skip
        if done.returncode != 0:
            detail = (done.stdout + done.stderr)[-2000:]
            if log.exists():
                detail += "\nserver log:\n" + log.read_text()[-2000:]
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}):\n{detail}")
        return done

    port = _free_port()
    started = False
    try:
        server_cmd(str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
                   "--no-sync", "-E", "UTF8", "--locale=C")  # fmt: skip
        options = (f"-k {sockets} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=50")  # fmt: skip
        server_cmd(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                   "-o", options, "start")  # fmt: skip
        started = True
        server_cmd(str(bin_dir / "createdb"), "-h", str(sockets), "-p", str(port),
                   "-U", SUPERUSER, DATABASE)  # fmt: skip
        version = server_cmd(str(bin_dir / "psql"), "-h", str(sockets), "-p", str(port),
                             "-X", "-U", SUPERUSER, "-d", DATABASE, "-Atc", "SELECT version()")
        yield PostgresServer(root, port, version.stdout.strip(), bin_dir)
    finally:
        if started:
            with contextlib.suppress(Exception):
                server_cmd(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                           "stop")  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
