"""A fleet on the test PostgreSQL: admin, two regional shared databases with tenant schemas, analytics."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings
from psycopg import sql

from connections import services as registry
from connections.models import DatabaseConnection, Tenant
from tests.conftest import REGISTRY_PASSWORD, REGISTRY_USER, PgServer

SHIPPED_SETS = Path(django_settings.BASE_DIR) / "migration_sets"


@dataclass
class Fleet:
    server: PgServer
    databases: dict[str, str] = field(default_factory=dict)  # connection name -> database name
    connections: dict[str, DatabaseConnection] = field(default_factory=dict)
    tenants: list[Tenant] = field(default_factory=list)

    def connect(self, name: str) -> psycopg.Connection:
        return self.server.connect(self.databases[name])

    def tenants_in(self, region: str) -> list[Tenant]:
        return [t for t in self.tenants if t.connection.region == region]

    def applied(self, connection: str, schema: str) -> list[str]:
        """The versions the schema's history holds as applied (``SQL`` rows), in the order they were applied."""
        query = sql.SQL(
            "SELECT version FROM {}.infra_schema_history WHERE type = 'SQL' ORDER BY installed_rank"
        ).format(sql.Identifier(schema))
        with self.connect(connection) as conn:
            return [row[0] for row in conn.execute(query)]


def create_owned_table(conn: psycopg.Connection, schema: str, table: str) -> None:
    """Create ``schema.table`` as the fleet's owner role (a conflicting object for a migration to trip on)."""
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(REGISTRY_USER)))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE {}.{} (x int)").format(sql.Identifier(schema), sql.Identifier(table)))
    conn.execute("RESET ROLE")


def _create_database(server: PgServer) -> str:
    name = f"f_{uuid.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(REGISTRY_USER)))
    return name


def build_fleet(server: PgServer, *, tenants_per_region: int) -> Fleet:
    fleet = Fleet(server=server)
    layout = [
        ("admin", "admin", ""),
        ("shared-us", "shared", "us-east"),
        ("shared-eu", "shared", "eu-west"),
        ("analytics", "analytics", ""),
    ]
    for name, kind, region in layout:
        database = _create_database(server)
        fleet.databases[name] = database
        fleet.connections[name] = registry.connection_create(
            actor="test",
            verify=False,
            name=name,
            database_type=kind,
            region=region,
            host=server.host,
            port=server.port,
            database_name=database,
            username=REGISTRY_USER,
            password=REGISTRY_PASSWORD,
            ssl_mode="disable",
            connect_timeout=5,
        )
    for region, shared in (("us", "shared-us"), ("eu", "shared-eu")):
        for index in range(tenants_per_region):
            fleet.tenants.append(
                registry.tenant_create(
                    slug=f"{region}{index:03d}",
                    name=f"Tenant {region} {index}",
                    connection=fleet.connections[shared],
                    actor="test",
                )
            )
    return fleet


def drop_fleet(fleet: Fleet) -> None:
    with fleet.server.connect() as conn:
        for database in fleet.databases.values():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


@pytest.fixture
def registered(db, settings) -> dict[str, DatabaseConnection]:
    """Registry rows only (nothing to connect to), beside any fleet's: listed-eu (eu-west) with tenant acme,
    listed-us (us-east)."""
    settings.CONNECTION_ALLOWED_HOSTS = ["127.0.0.1"]
    connections = {
        name: registry.connection_create(
            actor="test",
            verify=False,
            name=name,
            database_type="shared",
            region=region,
            host="127.0.0.1",
            port=5432,
            database_name=name.replace("-", "_"),
            username="nobody",
            password="unused",
            ssl_mode="disable",
        )
        for name, region in (("listed-eu", "eu-west"), ("listed-us", "us-east"))
    }
    registry.tenant_create(slug="acme", name="Acme", connection=connections["listed-eu"], actor="test")
    return connections


@pytest.fixture
def launch_held(monkeypatch):
    """``execution_start`` records executions without launching them: a test acts between planning and running
    (two plans before either runs, sets changed after planning), then runs each with ``execution_run``."""
    from migrations_runner.services import executions

    monkeypatch.setattr(executions, "_launch", lambda execution, **kwargs: execution)


@pytest.fixture
def queue_here(settings):
    """Executions go to the queue (no worker): a test runs the queued lanes in its own thread, and the lanes'
    target connections are closed after it."""
    from migrations_runner.services.runner.apply import lane_connections_close

    settings.MIGRATION_EXECUTOR = "queue"
    yield settings
    lane_connections_close()


@pytest.fixture
def sets_dir(tmp_path, settings) -> Path:
    """A private copy of the shipped migration sets that a test may edit."""
    target = tmp_path / "migration_sets"
    shutil.copytree(SHIPPED_SETS, target)
    settings.MIGRATIONS_DIR = target
    return target


@pytest.fixture
def fleet(pg_server, sets_dir, db):
    """1 admin, 2 shared (us-east, eu-west) with 20 tenant schemas each, 1 analytics database."""
    built = build_fleet(pg_server, tenants_per_region=20)
    yield built
    drop_fleet(built)


@pytest.fixture
def small_fleet(pg_server, sets_dir, db):
    """The same layout with 3 tenants per region."""
    built = build_fleet(pg_server, tenants_per_region=3)
    yield built
    drop_fleet(built)
