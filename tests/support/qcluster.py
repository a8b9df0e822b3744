"""Real django-q2 ``qcluster`` processes for the tests, stopped with a bounded grace period, then SIGKILL.

A ``qcluster`` given SIGTERM can hang in its signal handler (django-q2 #346), so every
cluster runs in its own process group: stopping sends SIGTERM to the group, waits a
few seconds, then SIGKILLs the whole group, so no worker is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from infra_site.embedded_postgres import wait_for_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

# The start of a child script (``python -c``) on the control database of its environment: Django set up and the
# control database migrated, then a shared database ``shared-us`` registered with ``args["tenants"]`` tenants
# t000, t001... from the JSON of its first argument (host, port, database, user, password, tenants).
FLEET_CHILD_PREAMBLE = """
import json, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from connections import services as registry
args = json.loads(sys.argv[1])
shared = registry.connection_create(
    actor="test", verify=False, name="shared-us", database_type="shared", region="us-east",
    host=args["host"], port=args["port"], database_name=args["database"], username=args["user"],
    password=args["password"], ssl_mode="disable", connect_timeout=5,
)
for index in range(args["tenants"]):
    registry.tenant_create(slug=f"t{index:03d}", name=f"T {index}", connection=shared, actor="test")
"""


def control_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process that shares this test's control database and settings."""
    from django.conf import settings
    from django.db import connection

    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ENVIRONMENT": "testing",
        "ENV_FILE": os.devnull,
        "ADMIN_DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
        "APP_ENCRYPTION_KEY": settings.APP_ENCRYPTION_KEY,
        "MIGRATIONS_DIR": str(settings.MIGRATIONS_DIR),
        "MIGRATION_EXECUTOR": "queue",
        "MIGRATION_MAX_PER_DATABASE": str(settings.MIGRATION_MAX_PER_DATABASE),
        "MIGRATION_LEASE_SECONDS": str(settings.MIGRATION_LEASE_SECONDS),
        "MIGRATION_HEARTBEAT_SECONDS": str(settings.MIGRATION_HEARTBEAT_SECONDS),
        "MIGRATION_LANE_SECONDS": str(settings.MIGRATION_LANE_SECONDS),
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
        "TEST_REGISTRY_PASSWORD": os.environ["TEST_REGISTRY_PASSWORD"],
    }
    env.update(overrides)
    return env


def child_env(**overrides: str) -> dict[str, str]:
    """The environment of a served app with a control database of its own (given in ``overrides``)."""
    env = control_env(**overrides)
    env["MIGRATION_EXECUTOR"] = "queue"
    return env


class Cluster:
    """One ``manage.py qcluster`` process group."""

    def __init__(self, env: dict[str, str], workers: int = 2) -> None:
        self.env = {**env, "Q_WORKERS": str(workers)}
        self.log = Path(tempfile.mkstemp(prefix="qcluster-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self) -> Cluster:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "qcluster"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process

        def running() -> bool:
            assert process.poll() is None, f"qcluster exited:\n{self.output()[-3000:]}"
            return "running." in self.output()

        wait_until(running, timeout=60, message=lambda: f"qcluster did not start:\n{self.output()[-3000:]}")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> set[int]:
        """The cluster's process and all its children (the workers among them)."""
        if self.process is None or self.process.poll() is not None:
            return set()
        parent = psutil.Process(self.process.pid)
        return {parent.pid, *(child.pid for child in parent.children(recursive=True))}

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL it; no orphans survive."""
        if self.process is None:
            return
        members = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        killed = []
        for pid in members:
            try:
                process = psutil.Process(pid)
                process.kill()
                killed.append(process)
            except psutil.NoSuchProcess:
                continue
        # A SIGKILL is not an exit: wait until they are gone (or zombies), so that none is seen alive after this.
        wait_until(lambda: not any(_running(process) for process in killed), timeout=10, interval=0.02)
        self.process = None


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1 (Debian's package), or None when it is not installed."""

    def __init__(self) -> None:
        import shutil
        import socket

        self.binary = shutil.which("redis-server")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)


def manage(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``manage.py`` with ``args`` in a child process with ``env``, its output captured."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


_REGISTER_FLEET = """
import json
from tests.support.postgres import PgServer
from tests.support.fleet import build_fleet
fleet = build_fleet(PgServer("{host}", {port}, "{user}", "{password}"), tenants_per_region=12)
print(json.dumps(fleet.databases))
"""


def migrate_and_register(env: dict, pg_server) -> dict[str, str]:
    """Migrate the control database of ``env`` and register a fleet on ``pg_server`` in it (``build_fleet``, 12
    tenants a region), from child processes; the fleet's databases by name."""
    import json

    migrate = manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    code = _REGISTER_FLEET.format(
        host=pg_server.host, port=pg_server.port, user=pg_server.superuser, password=pg_server.superuser_password
    )
    registered = manage(env, "shell", "-c", code)
    assert registered.returncode == 0, registered.stderr[-3000:]
    return json.loads(registered.stdout.strip().splitlines()[-1])


def drop_databases(pg_server, databases: dict[str, str]) -> None:
    """Drop the fleet's databases (``migrate_and_register``'s)."""
    from psycopg import sql

    with pg_server.connect() as conn:
        for database in databases.values():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
