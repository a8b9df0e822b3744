"""An embedded PostgreSQL 16 server for development, the demo and the tests.

The ``pgserver`` package ships PostgreSQL binaries and starts them on a Unix
socket with trust authentication. The registry needs TCP on 127.0.0.1 and real
password authentication (scram-sha-256) so that credential checks mean
something, so this module drives the bundled ``initdb`` and ``pg_ctl`` itself.
When run as root the server runs as the unprivileged ``pgserver`` system user,
as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"


def _bin_dir() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _run_as_owner() -> dict:
    """Return subprocess keyword arguments that drop root privileges when needed."""
    if os.geteuid() != 0:
        return {}
    from pgserver.utils import ensure_user_exists

    entry = ensure_user_exists(SYSTEM_USER)
    # Annotated Optional, but on POSIX it returns the user's entry, creating the user if needed, or raises.
    assert entry is not None
    return {"user": entry.pw_uid, "group": entry.pw_gid, "env": {**os.environ, "HOME": entry.pw_dir}}


def _make_traversable(path: Path) -> None:
    """Let the server's system user reach ``path`` (root-owned parents get o+x)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o005:
            parent.chmod(mode | 0o005)


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL server in ``data_dir`` listening on 127.0.0.1:``port``."""

    data_dir: Path
    port: int = 0
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    host: str = "127.0.0.1"
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "socket"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        """Return a ``postgresql://`` URL for ``database`` over TCP."""
        secret = self.password if password is None else password
        return f"postgresql://{quote(user)}:{quote(secret, safe='')}@{self.host}:{self.port}/{quote(database)}"

    def conninfo(self, database: str = "postgres") -> dict:
        """Return psycopg keyword arguments for the superuser over TCP."""
        return {
            "host": self.host,
            "port": self.port,
            "user": SUPERUSER,
            "password": self.password,
            "dbname": database,
        }

    def _pg(self, name: str, *args: str, timeout: float = 60) -> None:
        cmd = [str(_bin_dir() / name), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **_run_as_owner())
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}")

    def initialise(self) -> None:
        """Create the cluster with scram-sha-256 on TCP and trust on the socket."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        owner = _run_as_owner()
        _make_traversable(self.data_dir)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.data_dir / ".pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if owner:
            for path in (self.data_dir, self.socket_dir, pwfile):
                os.chown(path, owner["user"], owner["group"])
        try:
            self._pg(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (self.data_dir / ".password").write_text(self.password)
        (self.data_dir / ".password").chmod(0o600)

    def start(self) -> EmbeddedPostgres:
        """Initialise when needed, then start the server and wait until it accepts connections."""
        if not (self.pgdata / "PG_VERSION").exists():
            self.initialise()
        elif (self.data_dir / ".password").exists():
            self.password = (self.data_dir / ".password").read_text()
        if not self.port:
            self.port = free_port(self.host)
        options = [
            f"-h {self.host}",
            f"-p {self.port}",
            f"-k {self.socket_dir}",
            "-c max_connections=300",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ]
        options += [f"-c {key}={value}" for key, value in self.settings.items()]
        self._pg(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log_file),
            "-o",
            " ".join(options),
            "start",
        )
        logger.info("embedded postgresql started", extra={"port": self.port, "data_dir": str(self.data_dir)})
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL if it does not go)."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return
        try:
            self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "20", "stop", timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


MEMORY_DIR = Path("/dev/shm")  # noqa: S108 (only a parent: each server makes its own directory with mkdtemp)


def filesystem_of(path: Path) -> str:
    """The type of the file system holding ``path`` (its longest mount point in ``/proc/mounts``), or ``""``."""
    mounts = []
    with contextlib.suppress(OSError):
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    held = [(len(point), kind) for point, kind in mounts if path.is_relative_to(point)]
    return max(held)[1] if held else ""


def memory_parent(min_free: int) -> Path | None:
    """A directory in memory for a throw-away server's files: ``MEMORY_DIR`` when it is a tmpfs with ``min_free``
    bytes free, else None (the system's temporary directory).

    A server that creates and drops many databases (tests, benchmarks) runs steadier there: on a disk file system
    the files it creates after a drop go among the inodes just freed, each of which ext4 checks as "recently
    deleted" before handing one out; measured here, the same work then took up to 1.8 times as long (2.7 times the
    kernel time)."""
    if MEMORY_DIR.is_dir() and filesystem_of(MEMORY_DIR) == "tmpfs" and shutil.disk_usage(MEMORY_DIR).free >= min_free:
        return MEMORY_DIR
    return None


@contextlib.contextmanager
def temporary_server(*, parent: Path | None = None, **settings: str):
    """Yield a running throw-away server whose files (in a new directory under ``parent``, by default the
    system's temporary directory) are removed afterwards."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="infra-pg-", dir=parent)), settings=settings)
    try:
        yield server.start()
    finally:
        server.destroy()


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not accept connections within {timeout}s")
