"""Lock guard rails: a tenant whose table another session holds never makes the application wait behind the
migration for longer than lock_timeout, never holds up the other tenants, and completes once the holder is gone
(or fails with lock_timeout, naming the holder, and Retry failed completes it)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import sql

from migrations_runner import services
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.postgres import REGISTRY_PASSWORD, REGISTRY_USER
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

V10 = "ALTER TABLE tasks ADD COLUMN archived_at timestamptz;\n"


class AppTraffic(threading.Thread):
    """The application: short reads of one tenant's table in a loop, each query's wait recorded."""

    def __init__(self, fleet, tenant) -> None:
        super().__init__(daemon=True)
        self.conn = fleet.connect(tenant.connection.name)
        self.query = sql.SQL("SELECT count(*) FROM {}.tasks").format(sql.Identifier(tenant.schema_name))
        self.waits: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            self.conn.execute(self.query)
            self.waits.append(time.monotonic() - started)
            self.stop.wait(0.02)  # pacing of the application's own queries, not a wait for a condition

    def finish(self) -> list[float]:
        self.stop.set()
        self.join()
        self.conn.close()
        return self.waits


def hold_table(fleet, tenant) -> psycopg.Connection:
    """An open transaction of the application's role that read the tenant's table: it holds ACCESS SHARE until
    it ends."""
    conn = psycopg.connect(
        host=fleet.server.host,
        port=fleet.server.port,
        user=REGISTRY_USER,
        password=REGISTRY_PASSWORD,
        dbname=fleet.databases[tenant.connection.name],
    )
    conn.execute(sql.SQL("SELECT count(*) FROM {}.tasks").format(sql.Identifier(tenant.schema_name)))
    return conn


def migrate_to_v9(selection: TargetSelection) -> None:
    execution = services.execution_start(
        selection=selection, options=ExecutionOptions(), actor="setup", origin=Origin.API, wait=True
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.error


def runs_of(execution_id) -> dict[str, TargetRun]:
    return {
        run.tenant.slug: run for run in TargetRun.objects.filter(execution_id=execution_id).select_related("tenant")
    }


def start_in_background(selection: TargetSelection) -> tuple[threading.Thread, list]:
    started: list = []

    def run() -> None:
        started.append(
            services.execution_start(
                selection=selection,
                options=ExecutionOptions(batch_size=10),
                actor="operator",
                origin=Origin.API,
                wait=True,
            )
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, started


def test_a_held_table_stalls_neither_the_application_nor_the_other_tenants(fleet, sets_dir, settings):
    settings.MIGRATION_LOCK_TIMEOUT = 1.0
    tenants = fleet.tenants_in("us-east")
    assert len(tenants) == 20
    selection = TargetSelection(scope="tenant", regions=["us-east"])
    migrate_to_v9(selection)
    (sets_dir / "tenant" / "V10__add_tasks_archived_at.sql").write_text(V10)
    blocked = tenants[7]
    app = AppTraffic(fleet, blocked)
    app.start()
    blocker = hold_table(fleet, blocked)
    thread, started = start_in_background(selection)
    try:
        execution_id = wait_until(
            lambda: MigrationExecution.objects.filter(executed_by="operator").values_list("pk", flat=True).first(),
            timeout=60,
            interval=0.1,
            message="the execution was recorded",
        )
        others = {t.slug for t in tenants} - {blocked.slug}

        def others_done_while_blocked() -> bool:
            runs = runs_of(execution_id)
            done = all(runs[slug].status == TargetStatus.SUCCEEDED for slug in others)
            return done and runs[blocked.slug].lock_waits >= 2

        wait_until(others_done_while_blocked, timeout=120, interval=0.2, message="the other 19 finished")
        waiting = runs_of(execution_id)[blocked.slug]
        assert waiting.status in (TargetStatus.PENDING, TargetStatus.RUNNING)
        assert f"held by pid {blocker.info.backend_pid}" in waiting.waiting
        assert f"{blocked.schema_name}.tasks" in waiting.waiting
        released_at = time.time()
    finally:
        blocker.rollback()
        blocker.close()
    thread.join(timeout=120)
    waits = app.finish()
    (execution,) = started
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    done = runs_of(execution.pk)[blocked.slug]
    assert done.status == TargetStatus.SUCCEEDED
    assert done.completed_at.timestamp() >= released_at
    assert done.lock_waits >= 2
    assert [a["version"] for a in done.applied_versions] == ["10"]
    assert max(waits) <= settings.MIGRATION_LOCK_TIMEOUT + 0.5, f"an application query waited {max(waits):.2f} s"


def test_a_lock_held_past_the_budget_fails_with_lock_timeout_naming_the_holder_and_retry_completes_it(
    small_fleet, sets_dir, settings
):
    settings.MIGRATION_LOCK_TIMEOUT = 0.5
    settings.MIGRATION_LOCK_RETRY_FOR = 2.0
    tenant = small_fleet.tenants_in("eu-west")[0]
    selection = TargetSelection(scope="tenant", tenants=[tenant.slug])
    migrate_to_v9(selection)
    (sets_dir / "tenant" / "V10__add_tasks_archived_at.sql").write_text(V10)
    blocker = hold_table(small_fleet, tenant)
    try:
        blocker.execute("SELECT 'the report that never ends'")
        execution = services.execution_start(
            selection=selection, options=ExecutionOptions(), actor="operator", origin=Origin.API, wait=True
        )
    finally:
        pid = blocker.info.backend_pid
        blocker.rollback()
        blocker.close()
    assert execution.status == ExecutionStatus.FAILED
    run = execution.targets.get()
    assert run.error["kind"] == "lock_timeout"
    assert run.error["sqlstate"] == "55P03"
    assert f"held by pid {pid}" in run.error["message"]
    assert "the report that never ends" in run.error["message"]
    assert f"{tenant.schema_name}.tasks held by pid" in run.error["message"]
    assert run.lock_waits >= 2

    retry = services.execution_retry(execution=execution, actor="operator", origin=Origin.API, wait=True)
    assert retry.status == ExecutionStatus.COMPLETED, retry.error
    assert [a["version"] for a in retry.targets.get().applied_versions] == ["10"]
