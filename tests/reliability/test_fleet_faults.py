"""Reliability under faults: a target database stopped mid-execution, five executions over the same tenants."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connections as django_connections
from django.utils import timezone
from psycopg import sql

from connections import services as registry
from infra_site.embedded_postgres import EmbeddedPostgres
from migrations_runner import services
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.fleet import build_fleet, drop_fleet
from tests.support.postgres import REGISTRY_PASSWORD, REGISTRY_USER
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]


def slow_down(sets_dir: Path, seconds: float) -> None:
    script = sets_dir / "tenant" / "V2__create_projects.sql"
    script.write_text(f"SELECT pg_sleep({seconds});\n" + script.read_text())


@pytest.fixture
def second_server(tmp_path):
    """A second PostgreSQL server holding one dedicated tenant database, which a test may stop and start."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="infra-second-pg-"))).start()
    with psycopg.connect(**server.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(REGISTRY_USER), sql.Literal(REGISTRY_PASSWORD)
            )
        )
        conn.execute(sql.SQL("CREATE DATABASE dedicated OWNER {}").format(sql.Identifier(REGISTRY_USER)))
    yield server
    server.destroy()


def register_dedicated(server):
    """The tenant connection ``dedicated`` on the second server (its database ``dedicated``)."""
    return registry.connection_create(
        actor="test",
        name="dedicated",
        database_type="tenant",
        region="us-east",
        host=server.host,
        port=server.port,
        database_name="dedicated",
        username=REGISTRY_USER,
        password=REGISTRY_PASSWORD,
        ssl_mode="disable",
        connect_timeout=2,
    )


def migrate_tenants(*, batch_size: int, actor: str = "test") -> MigrationExecution:
    """Migrate every tenant in this process (lanes as threads) and return the execution when it ends."""
    return services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(batch_size=batch_size),
        actor=actor,
        origin=Origin.API,
        wait=True,
    )


def test_a_target_database_stopped_mid_run_fails_alone_and_retry_completes_it(
    small_fleet, sets_dir, second_server, settings
):
    settings.MIGRATION_RETRY_ATTEMPTS = 2
    settings.MIGRATION_FLEET_DB_WAIT = 2
    connection = register_dedicated(second_server)
    registry.tenant_create(slug="dedicated", name="Dedicated", connection=connection, actor="test")
    slow_down(sets_dir, 0.4)
    result: dict = {}
    worker = threading.Thread(
        target=lambda: (result.update(done=migrate_tenants(batch_size=2)), django_connections.close_all())
    )
    worker.start()
    wait_until(
        lambda: TargetRun.objects.filter(connection=connection, status=TargetStatus.RUNNING).exists(),
        timeout=60,
        interval=0.02,
        message="the dedicated database's target never started",
    )
    second_server.stop()
    worker.join(timeout=180)
    done = result["done"]
    runs = {run.label: run for run in done.targets.select_related("connection")}
    failed = runs["dedicated/public"]
    assert failed.status == TargetStatus.FAILED
    assert failed.error["kind"] == "connection", failed.error
    # Stopped after it reached the database: failed after its retries; before: it waited for the server, then failed.
    assert failed.attempts >= 2 or failed.error["message"].startswith("database server unreachable"), failed.error
    others = [run for label, run in runs.items() if label != "dedicated/public"]
    assert {run.status for run in others} == {TargetStatus.SUCCEEDED}
    assert "dedicated/public" in done.error

    second_server.start()
    retry = services.execution_retry(execution=done, actor="test", origin=Origin.API, wait=True)
    assert retry.status == ExecutionStatus.COMPLETED
    assert [run.label for run in retry.targets.select_related("connection")] == ["dedicated/public"]
    assert retry.targets.get().to_version == "9"


OUTAGE_S = 10


def test_a_server_down_for_ten_seconds_fails_only_the_targets_running_on_it(
    small_fleet, sets_dir, second_server, settings
):
    # Its targets that had not started wait for it (MIGRATION_FLEET_DB_WAIT, 30 s) instead of failing one by one.
    connection = register_dedicated(second_server)
    for index in range(16):
        slug = f"dedicated{index:02d}"
        registry.tenant_create(slug=slug, name=slug, connection=connection, schema_name=f"tenant_{slug}", actor="test")
    slow_down(sets_dir, 1)
    result: dict = {}
    worker = threading.Thread(
        target=lambda: (result.update(done=migrate_tenants(batch_size=3)), django_connections.close_all())
    )
    worker.start()
    on_server = TargetRun.objects.filter(connection=connection)
    wait_until(
        lambda: on_server.filter(status=TargetStatus.SUCCEEDED).count() >= 2,
        timeout=60,
        interval=0.05,
        message="two targets of the dedicated server done",
    )
    second_server.stop()
    stopped_at = timezone.now()
    time.sleep(OUTAGE_S)  # the outage itself: its length is what is tested
    second_server.start()
    worker.join(timeout=120)
    done = result["done"]
    runs = list(done.targets.select_related("connection"))
    failed = [run for run in runs if run.status == TargetStatus.FAILED]
    # Only the targets that were running when the server went away may fail; every other one completes.
    assert len(failed) <= 3, [(run.label, run.error) for run in failed]
    for run in failed:
        assert run.connection == connection
        assert run.started_at is not None
        assert run.started_at <= stopped_at, (run.label, run.started_at, stopped_at)
        assert run.error["kind"] == "connection", run.error
    assert {run.status for run in runs if run not in failed} == {TargetStatus.SUCCEEDED}
    assert len(runs) == 6 + 16


def test_five_executions_over_the_same_100_tenants_apply_each_version_once(pg_server, sets_dir, settings):
    settings.MIGRATION_LOCK_WAIT = 1
    settings.MIGRATION_RETRY_ATTEMPTS = 60
    fleet = build_fleet(pg_server, tenants_per_region=50)
    try:
        finished: list = []

        def run(actor: str) -> None:
            try:
                finished.append(migrate_tenants(batch_size=4, actor=actor))
            finally:
                django_connections.close_all()

        threads = [threading.Thread(target=run, args=(f"run-{n}",)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=280)
        assert len(finished) == 5
        assert {e.status for e in finished} == {ExecutionStatus.COMPLETED}, [e.error for e in finished]
        applied = sum(len(r.applied_versions) for e in finished for r in e.targets.all())
        assert applied == 100 * 10  # 9 versions and one repeatable per tenant, each applied by one execution only
        with fleet.connect("shared-us") as us, fleet.connect("shared-eu") as eu:
            for tenant in fleet.tenants:
                conn = us if tenant.connection.name == "shared-us" else eu
                rows = conn.execute(
                    sql.SQL(
                        "SELECT version, count(*) FROM {}.infra_schema_history WHERE type = 'SQL' GROUP BY 1"
                    ).format(sql.Identifier(tenant.schema_name))
                ).fetchall()
                assert len(rows) == 9, tenant.slug
                assert all(count == 1 for _, count in rows), tenant.slug
    finally:
        drop_fleet(fleet)
