"""Fleets for the tests: real databases on the test PostgreSQL registered as connections and tenants, or
registry rows and target runs written in bulk to the control database alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from connections import services as registry
from connections.models import DatabaseConnection, Tenant
from migrations_runner import selectors
from migrations_runner.models import ExecutionStatus, MigrationExecution, TargetRun, TargetStatus
from tests.support.postgres import REGISTRY_PASSWORD, REGISTRY_USER, PgServer, database_create, database_drop

TENANT_LATEST = "9"  # the shipped tenant set's latest version
DATABASE_LATEST = "7"  # admin, shared and analytics


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


def build_fleet(server: PgServer, *, tenants_per_region: int) -> Fleet:
    """Create and register admin, two regional shared databases with ``tenants_per_region`` tenants each, and
    analytics; return them."""
    fleet = Fleet(server=server)
    layout = [
        ("admin", "admin", ""),
        ("shared-us", "shared", "us-east"),
        ("shared-eu", "shared", "eu-west"),
        ("analytics", "analytics", ""),
    ]
    for name, kind, region in layout:
        database = database_create(server, prefix="f")
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


def runs_by_label(execution: MigrationExecution) -> dict[str, TargetRun]:
    """The execution's target runs by their label (``connection/schema``)."""
    return {run.label: run for run in selectors.execution_targets(execution=execution)}


def drop_fleet(fleet: Fleet) -> None:
    """Drop the fleet's databases (its registry rows go with the test's control database)."""
    for database in fleet.databases.values():
        database_drop(fleet.server, database)


@dataclass
class BulkFleet:
    connections: dict[str, DatabaseConnection]
    tenants: list[Tenant] = field(default_factory=list)
    # Tenant slug -> the state its latest run gives it.
    states: dict[str, str] = field(default_factory=dict)


# The latest run of tenant i is chosen by i % 5: (status, from_version, to_version, error kind, state).
TENANT_RUNS = [
    (TargetStatus.SUCCEEDED, "7", TENANT_LATEST, "", "up_to_date"),
    (TargetStatus.SUCCEEDED, "", "5", "", "behind"),
    (TargetStatus.FAILED, "9", "9", "drift", "drifted"),
    (TargetStatus.FAILED, "3", "4", "sql", "failing"),
    None,  # never run
]


def bulk_fleet(tenants: int, *, history: int = 1) -> BulkFleet:
    """Registry rows and target runs written straight to the control database (no fleet database behind them):
    four databases, ``tenants`` tenants over two regions, and ``history`` executions' runs per target."""
    layout = [("admin", "admin", ""), ("shared-us", "shared", "us-east"), ("shared-eu", "shared", "eu-west")]
    layout.append(("analytics", "analytics", ""))
    connections = {
        name: DatabaseConnection.objects.create(
            name=name,
            database_type=kind,
            region=region,
            host="127.0.0.1",
            port=5432,
            database_name=name.replace("-", "_"),
            username="fleet",
            is_healthy=name != "shared-eu",
        )
        for name, kind, region in layout
    }
    fleet = BulkFleet(connections=connections)
    fleet.tenants = Tenant.objects.bulk_create(
        Tenant(
            slug=f"t{i:05d}",
            name=f"Tenant {i}",
            connection=connections["shared-us" if i % 2 else "shared-eu"],
            schema_name=f"t_{i:05d}",
        )
        for i in range(tenants)
    )
    executions = MigrationExecution.objects.bulk_create(
        MigrationExecution(
            scope="all",
            executed_by="bulk",
            status=ExecutionStatus.COMPLETED,
            targets_total=tenants + 4,
            targets_succeeded=tenants + 4,
        )
        for _ in range(history)
    )
    runs = []
    for number, execution in enumerate(executions):
        latest = number == history - 1
        for name, conn in connections.items():
            runs.append(
                TargetRun(
                    execution=execution,
                    connection=conn,
                    schema_name="public",
                    database_type=conn.database_type,
                    region=conn.region,
                    status=TargetStatus.SUCCEEDED,
                    from_version="1",
                    # The latest run leaves shared-eu behind, the others up to date.
                    to_version="6" if latest and name == "shared-eu" else DATABASE_LATEST,
                )
            )
        for i, tenant in enumerate(fleet.tenants):
            outcome = TENANT_RUNS[i % 5]
            if outcome is None:
                continue
            if not latest:
                outcome = (TargetStatus.FAILED, "", "", "sql", "")
            status, from_version, to_version, kind, _ = outcome
            runs.append(
                TargetRun(
                    execution=execution,
                    connection_id=tenant.connection_id,
                    tenant=tenant,
                    schema_name=tenant.schema_name,
                    database_type="tenant",
                    region=connections["shared-us" if i % 2 else "shared-eu"].region,
                    status=status,
                    from_version=from_version,
                    to_version=to_version,
                    error={"kind": kind, "message": f"{kind} trouble"} if kind else None,
                )
            )
    TargetRun.objects.bulk_create(runs, batch_size=1000)
    fleet.states = {t.slug: (TENANT_RUNS[i % 5] or (None,) * 4 + ("unknown",))[4] for i, t in enumerate(fleet.tenants)}
    return fleet


def clear_bulk_fleet() -> None:
    """Remove what ``bulk_fleet`` wrote (its executions stay)."""
    TargetRun.objects.all().delete()
    Tenant.objects.all().delete()
    DatabaseConnection.all_objects.all().delete()
