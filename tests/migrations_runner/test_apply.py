"""Applying one target in detail: transient retries, the non-transactional path, repeatables, placeholders."""

import shutil
import threading
import time

import pytest

from migrations_runner import services
from migrations_runner.models import ExecutionStatus, Origin, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.fleet import runs_by_label

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tenant_dir(sets_dir):
    """An empty tenant set the test writes its own scripts into."""
    folder = sets_dir / "tenant"
    shutil.rmtree(folder)
    folder.mkdir()
    return folder


def test_a_lock_timeout_is_retried_until_the_lock_is_free(small_fleet, tenant_dir, settings):
    settings.MIGRATION_LOCK_TIMEOUT = 0.2
    settings.MIGRATION_RETRY_ATTEMPTS = 6
    (tenant_dir / "V1__t.sql").write_text("CREATE TABLE t (x int);\n")
    assert (
        services.execution_start(
            selection=TargetSelection(scope="tenant", tenants=["us000"]),
            options=ExecutionOptions(),
            actor="t",
            origin=Origin.API,
            wait=True,
        ).status
        == "completed"
    )
    (tenant_dir / "V2__alter.sql").write_text("ALTER TABLE t ADD COLUMN y int;\n")
    holder = small_fleet.connect("shared-us")
    holder.autocommit = False
    holder.execute("LOCK TABLE tenant_us000.t IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(1.0, holder.rollback)
    release.start()
    try:
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", tenants=["us000"]),
            options=ExecutionOptions(),
            actor="t",
            origin=Origin.API,
            wait=True,
        )
    finally:
        release.join()
        holder.close()
    run = execution.targets.get()
    assert run.status == TargetStatus.SUCCEEDED
    assert run.lock_waits >= 1  # lock waits are retried apart from other transient errors
    assert run.to_version == "2"


def test_a_non_retryable_error_is_not_retried(small_fleet, tenant_dir, settings):
    settings.MIGRATION_RETRY_ATTEMPTS = 3
    (tenant_dir / "V1__bad.sql").write_text("CREATE TABLE t (x int);\nSELECT no_such_column FROM t;\n")
    run = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    ).targets.get()
    assert run.status == TargetStatus.FAILED
    assert run.attempts == 1
    assert run.error["sqlstate"] == "42703"
    assert run.error["statement"] == "SELECT no_such_column FROM t;"
    assert run.error["statement_index"] == 1


def test_non_transactional_scripts_run_statement_by_statement(small_fleet, tenant_dir):
    (tenant_dir / "V1__t.sql").write_text("CREATE TABLE t (x int, y int);\n")
    (tenant_dir / "V2__idx.sql").write_text(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_x ON t (x);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_y ON t (y);\n"
    )
    (tenant_dir / "V3__broken.sql").write_text(
        "-- infra:transactional=false\nCREATE TABLE u (x int);\nCREATE INDEX CONCURRENTLY u_z ON u (z);\n"
    )
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    run = execution.targets.get()
    assert run.status == TargetStatus.FAILED
    assert run.to_version == "2"
    assert run.error["version"] == "3"
    assert run.error["statement"] == "CREATE INDEX CONCURRENTLY u_z ON u (z);"
    with small_fleet.connect("shared-us") as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'tenant_us000'")}
        assert {"t_x", "t_y"} <= indexes
        versions = [r[0] for r in conn.execute("SELECT version FROM tenant_us000.infra_schema_history ORDER BY 1")]
        assert versions == ["1", "2"]


def test_repeatables_rerun_when_their_checksum_changes_and_placeholders_apply(small_fleet, tenant_dir):
    (tenant_dir / "V1__t.sql").write_text(
        "CREATE TABLE t (x int);\nCOMMENT ON SCHEMA ${schema} IS 'tenant ${tenant_slug} in ${region}';\n"
    )
    (tenant_dir / "R__view.sql").write_text("CREATE OR REPLACE VIEW v AS SELECT x FROM t;\n")
    first = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert [a["script"] for a in first.targets.get().applied_versions] == ["V1__t.sql", "R__view.sql"]
    again = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert again.targets.get().applied_versions == []
    (tenant_dir / "R__view.sql").write_text("CREATE OR REPLACE VIEW v AS SELECT x, x * 2 AS y FROM t;\n")
    third = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert [a["script"] for a in third.targets.get().applied_versions] == ["R__view.sql"]
    with small_fleet.connect("shared-us") as conn:
        comment = conn.execute("SELECT obj_description('tenant_us000'::regnamespace)").fetchone()[0]
        assert comment == "tenant us000 in us-east"
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'v'").fetchone()[0] == 2


def test_an_unreachable_database_fails_its_targets_with_a_connection_error(small_fleet, tenant_dir, settings):
    settings.MIGRATION_RETRY_ATTEMPTS = 1
    settings.MIGRATION_FLEET_DB_WAIT = 1  # its targets wait this long for the server, then fail
    (tenant_dir / "V1__t.sql").write_text("CREATE TABLE t (x int);\n")
    from connections.models import DatabaseConnection

    DatabaseConnection.objects.filter(name="shared-eu").update(port=1, connect_timeout=1)
    started = time.monotonic()
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
    )
    assert time.monotonic() - started < 30
    assert execution.status == ExecutionStatus.FAILED
    runs = runs_by_label(execution)
    for label, run in runs.items():
        if label.startswith("shared-eu/"):
            assert run.status == TargetStatus.FAILED
            assert run.error["kind"] == "connection"
        else:
            assert run.status == TargetStatus.SUCCEEDED
