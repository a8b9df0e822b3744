"""The demo fleet of ``manage.py demo``: an embedded PostgreSQL, a registered fleet on it, an operator account.

Every step finds what a previous run made and makes only what is missing: the server's data directory
(``DEMO_DATA_DIR``), its databases, the connections (by name), the tenants (by slug), the operator account,
and the migrations (a fleet that is up to date records no execution). The connections are registered through
the registry's services like any other, so their password is encrypted and they are tested first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
from django.contrib.auth.models import Group, User
from django.db import transaction
from psycopg import sql

from connections import selectors as registry
from connections import services as registry_services
from connections.exceptions import ConnectionNotFound
from connections.models import DatabaseConnection, DatabaseType
from infra_site import roles
from infra_site.cli import ProgressBar
from infra_site.embedded_postgres import EmbeddedPostgres, free_port
from infra_site.errors import Conflict
from migrations_runner import selectors as migrations
from migrations_runner import services as runner
from migrations_runner.engine.targets import Target
from migrations_runner.exceptions import ExecutionFinished
from migrations_runner.models import FINISHED_TARGET_STATUSES, MigrationExecution, Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection

logger = logging.getLogger(__name__)

ACTOR = "demo"
OWNER_ROLE = "demo_fleet"  # the login role that owns every demo database and that the connections use
OPERATOR = "operator"
REGIONS = ("us-east", "eu-west")
TENANTS_PER_REGION = 100
# Registered after the first migration run and left unmigrated: the operator's first run from the admin.
LATE_TENANTS_PER_REGION = 6
DEDICATED_TENANTS = {"initech": "Initech", "umbrella": "Umbrella Corporation"}


@dataclass(frozen=True)
class DatabaseSpec:
    """One database of the demo fleet and the connection that registers it."""

    name: str
    database_type: str
    region: str = ""

    @property
    def database(self) -> str:
        return self.name.replace("-", "_")


def fleet_layout() -> list[DatabaseSpec]:
    """Return the demo fleet: an admin database, a shared one per region, analytics, dedicated tenant ones."""
    return [
        DatabaseSpec("demo-admin", DatabaseType.ADMIN),
        *(DatabaseSpec(f"demo-shared-{region}", DatabaseType.SHARED, region) for region in REGIONS),
        DatabaseSpec("demo-analytics", DatabaseType.ANALYTICS),
        *(DatabaseSpec(f"demo-tenant-{slug}", DatabaseType.TENANT) for slug in DEDICATED_TENANTS),
    ]


def _region_slug(region: str) -> str:
    return region.replace("-", "_")


def _late_tenants() -> list[tuple[str, str, str]]:
    """Return (region, slug, name) of the tenants registered after the first migration run."""
    return [
        (region, f"new_{_region_slug(region)}_{n:02d}", f"New customer {region} {n:02d}")
        for region in REGIONS
        for n in range(1, LATE_TENANTS_PER_REGION + 1)
    ]


# --- the embedded server --------------------------------------------------------------------------------------------


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class DemoAlreadyRunning(Conflict):
    code = "demo_running"


def _claim(data_dir: Path) -> Path:
    """Record this process as the one demo using ``data_dir``; refuse while another demo process holds it."""
    owner_file = data_dir / "demo.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, psutil.Error):
        holder = psutil.Process(int(owner_file.read_text()))
        if holder.pid != os.getpid() and "demo" in " ".join(holder.cmdline()):
            raise DemoAlreadyRunning(
                f"Another demo (pid {holder.pid}) is running on {data_dir}: stop it first.",
                details={"pid": holder.pid, "data_dir": str(data_dir)},
            )
    owner_file.write_text(str(os.getpid()))
    return owner_file


def _stop_orphan(server: EmbeddedPostgres) -> None:
    """Stop a server a killed demo left running on this data directory (else it could not start again)."""
    pid_file = server.pgdata / "postmaster.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError, psutil.Error):
        if psutil.Process(int(pid_file.read_text().split()[0])).name() == "postgres":
            server.stop()


@contextlib.contextmanager
def demo_postgres(*, data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """Start the demo's PostgreSQL (data, port and passwords kept in ``data_dir``) and stop it on the way out."""
    data_dir.mkdir(parents=True, exist_ok=True)
    owner_file = _claim(data_dir)
    owner = os.getpid()
    server = EmbeddedPostgres(data_dir)
    _stop_orphan(server)
    # The same port as last time when it is free, so the registered connections stay as they are.
    port_file = data_dir / "port"
    stored = int(port_file.read_text()) if port_file.exists() else 0
    server.port = stored if stored and _port_is_free(stored) else free_port()
    try:
        server.start()
        port_file.write_text(str(server.port))
        yield server
    finally:
        if os.getpid() == owner:  # gunicorn's forked workers unwind through here too when they exit
            server.stop()
            owner_file.unlink(missing_ok=True)


def _secret_file(path: Path) -> str:
    """Return the secret kept in ``path``, creating it (owner-only, 0600) at first use."""
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(24)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secret)
    return secret


def databases_ensure(*, server: EmbeddedPostgres, data_dir: Path) -> str:
    """Create the owner role and each database of the layout when missing; return the role's password."""
    password = _secret_file(data_dir / ".fleet-password")
    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        role = sql.Identifier(OWNER_ROLE)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [OWNER_ROLE]).fetchone()
        statement = "ALTER ROLE {} WITH LOGIN PASSWORD {}" if exists else "CREATE ROLE {} WITH LOGIN PASSWORD {}"
        conn.execute(sql.SQL(statement).format(role, sql.Literal(password)))
        present = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for spec in fleet_layout():
            if spec.database not in present:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(spec.database), role))
    return password


# --- the registry ---------------------------------------------------------------------------------------------------


@dataclass
class FleetReport:
    """What ``fleet_register`` found and made."""

    connections: dict[str, DatabaseConnection]
    connections_created: int = 0
    tenants_created: int = 0


def _connection_ensure(
    spec: DatabaseSpec, *, server: EmbeddedPostgres, password: str, actor: str
) -> tuple[DatabaseConnection, bool]:
    values: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "database_name": spec.database,
        "username": OWNER_ROLE,
    }
    try:
        connection = registry.connection_get_by_name(name=spec.name)
    except ConnectionNotFound:
        connection = registry_services.connection_create(
            actor=actor,
            name=spec.name,
            database_type=spec.database_type,
            region=spec.region,
            password=password,
            ssl_mode="disable",  # the embedded server listens on 127.0.0.1 only, without TLS
            connect_timeout=5,
            **values,
        )
        return connection, True
    # The server came up on another port, or its data directory was made afresh: point the connection at it.
    moved = {key: value for key, value in values.items() if getattr(connection, key) != value}
    if moved or connection.password != password:
        connection = registry_services.connection_update(connection=connection, actor=actor, password=password, **moved)
    return connection, False


def _tenants_ensure(wanted: list[tuple[str, str, DatabaseConnection]], *, actor: str) -> int:
    """Register the (slug, name, connection) tenants whose slug is not taken; return how many were made."""
    taken = set(registry.tenant_list().filter(slug__in=[slug for slug, _, _ in wanted]).values_list("slug", flat=True))
    missing = [item for item in wanted if item[0] not in taken]
    with transaction.atomic():
        for slug, name, connection in missing:
            registry_services.tenant_create(slug=slug, name=name, connection=connection, actor=actor)
    return len(missing)


def fleet_register(
    *, server: EmbeddedPostgres, password: str, tenants_per_region: int, actor: str = ACTOR
) -> FleetReport:
    """Register the layout's connections and tenants that the registry does not hold yet."""
    report = FleetReport(connections={})
    for spec in fleet_layout():
        connection, created = _connection_ensure(spec, server=server, password=password, actor=actor)
        report.connections[spec.name] = connection
        report.connections_created += created
    wanted = [
        (f"{_region_slug(region)}_{n:03d}", f"Customer {region} {n:03d}", report.connections[f"demo-shared-{region}"])
        for region in REGIONS
        for n in range(tenants_per_region)
    ]
    wanted += [(slug, name, report.connections[f"demo-tenant-{slug}"]) for slug, name in DEDICATED_TENANTS.items()]
    report.tenants_created = _tenants_ensure(wanted, actor=actor)
    return report


def late_tenants_ensure(*, connections: dict[str, DatabaseConnection], actor: str = ACTOR) -> int:
    """Register the late tenants (left unmigrated) when missing; return how many were made."""
    wanted = [(slug, name, connections[f"demo-shared-{region}"]) for region, slug, name in _late_tenants()]
    return _tenants_ensure(wanted, actor=actor)


def operator_ensure(*, username: str = OPERATOR) -> tuple[User, str | None]:
    """Return the local operator account holding ``infrastructure:admin``, and its password when just created."""
    user = User.objects.filter(username=username).first()
    if user is not None:
        return user, None
    password = secrets.token_urlsafe(12)
    with transaction.atomic():
        user = User.objects.create_user(username, password=password, is_staff=True)
        user.groups.add(Group.objects.get_or_create(name=roles.INFRASTRUCTURE_ADMIN)[0])
    logger.info("demo operator created", extra={"username": username})
    return user, password


# --- migrations -----------------------------------------------------------------------------------------------------


def _pending_anywhere(targets: list[Target]) -> bool:
    """Tell whether any target has a version to apply (or could not be read), from the targets' histories."""
    sets = migrations.sets_load(types={t.database_type for t in targets})
    plans = migrations.target_plans(targets, migrations.schema_states(targets), sets)
    return any(plan.pending or plan.error for plan in plans.values())


def fleet_migrate(
    *,
    connections: dict[str, DatabaseConnection],
    progress: Callable[[int], ProgressBar],
    stop_requested: Callable[[], bool],
    actor: str = ACTOR,
) -> MigrationExecution | None:
    """Run the shipped sets over the demo fleet in this process; None when it is up to date (the late tenants,
    left unmigrated on purpose, aside).

    ``progress(total)`` gives the bar that each finished target advances; once ``stop_requested()`` answers
    true, the execution is cancelled (running targets end between scripts) and returned as it ends.
    """
    late = {slug for _, slug, _ in _late_tenants()}
    selection = TargetSelection(connections=list(connections))
    if not _pending_anywhere([t for t in migrations.targets_resolve(selection) if t.tenant_slug not in late]):
        return None
    seen: set[int] | None = None
    bar: ProgressBar | None = None
    cancelled = False

    def step(execution: MigrationExecution) -> None:
        nonlocal seen, bar, cancelled
        if seen is None:
            # Targets found up to date when planned end without running: the bar counts the others.
            planned = execution.targets.filter(status__in=FINISHED_TARGET_STATUSES, started_at__isnull=True)
            seen = set(planned.values_list("pk", flat=True))
            bar = progress(execution.targets_total - len(seen))
        if stop_requested() and not cancelled:
            cancelled = True
            with contextlib.suppress(ExecutionFinished):  # it ended meanwhile
                runner.execution_cancel(execution=execution, actor=actor)
        finished = execution.targets.select_related("connection").filter(status__in=FINISHED_TARGET_STATUSES)
        for run in finished.exclude(pk__in=seen):
            seen.add(run.pk)
            if bar is not None:
                bar.advance(run.label, run.status)

    try:
        execution = runner.execution_start(
            selection=selection,
            options=ExecutionOptions(),
            actor=actor,
            origin=Origin.COMMAND,
            wait=True,
            on_poll=step,
        )
        step(execution)
    finally:
        if bar is not None:
            bar.close()
    return execution
