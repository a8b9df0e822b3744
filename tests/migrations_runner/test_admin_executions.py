"""The executions console in the admin: Run (form, preview, confirm), progress, detail, Cancel / Retry / Roll back,
permissions, the audit log, and query counts that do not grow with the number of target runs."""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.urls import reverse
from django.utils import timezone

from connections.models import DatabaseConnection
from migrations_runner import services
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.fleet import create_owned_table

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RUN = reverse("admin:migrations_runner_migrationexecution_run")
PREVIEW = reverse("admin:migrations_runner_migrationexecution_preview")
CONFIRM = reverse("admin:migrations_runner_migrationexecution_confirm")
CHANGELIST = reverse("admin:migrations_runner_migrationexecution_changelist")


def url(name: str, execution) -> str:
    return reverse(f"admin:migrations_runner_migrationexecution_{name}", args=[execution.pk])


@pytest.fixture
def inline(settings):
    settings.MIGRATION_EXECUTOR = "inline"
    return settings


def hidden_inputs(html: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html):
        fields.setdefault(name, []).append(value)
    return fields


def test_run_preview_confirm_runs_and_records_who_did_it(small_fleet, admin_as, inline):
    client = admin_as("migrations:execute")
    page = client.get(RUN + "?scope=tenant&tenants=us000&tenants=eu001")
    assert page.status_code == 200
    form = page.context["form"]
    assert form.initial["scope"] == "tenant"
    assert len(form.initial["tenants"]) == 2
    preview = client.get(PREVIEW, {"scope": "tenant", "on_failure": "continue", "batch_size": 4})
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "1, 2, 3, 4, 5, 6, 7, 8, 9" in html  # pending versions per target
    assert "run outside a transaction" in html  # tenant V9 builds an index concurrently
    assert MigrationExecution.objects.count() == 0  # nothing recorded before the confirmation
    fields = hidden_inputs(html)
    response = client.post(CONFIRM, fields)
    execution = MigrationExecution.objects.get()
    assert response.status_code == 302
    assert response["Location"] == url("progress", execution)
    assert execution.origin == Origin.ADMIN
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.targets_succeeded == 6
    entry = LogEntry.objects.get(object_id=str(execution.pk))
    assert entry.action_flag == ADDITION
    assert entry.user.username.startswith("user-")
    progress = client.get(url("progress", execution)).content.decode()
    assert 'data-finished="true"' in progress
    assert "100.0%" in progress


def test_a_stale_preview_is_planned_again_not_executed(small_fleet, admin_as, inline):
    client = admin_as("migrations:execute")
    html = client.get(PREVIEW, {"scope": "tenant", "on_failure": "continue", "batch_size": 4}).content.decode()
    fields = hidden_inputs(html)
    services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="someone-else",
        origin=Origin.API,
        wait=True,
    )  # the fleet moves on
    before = MigrationExecution.objects.count()
    response = client.post(CONFIRM, fields)
    assert response.status_code == 200
    assert 'id="stale-plan"' in response.content.decode()
    assert MigrationExecution.objects.count() == before
    fresh = hidden_inputs(response.content.decode())
    assert fresh["fingerprint"] != fields["fingerprint"]
    assert client.post(CONFIRM, fresh).status_code == 302
    assert MigrationExecution.objects.count() == before + 1


def test_a_failure_shows_sqlstate_and_statement_and_retry_runs_only_that_target(small_fleet, admin_as, inline):
    victim = small_fleet.tenants[0]
    with small_fleet.connect("shared-us") as conn:
        create_owned_table(conn, victim.schema_name, "projects")
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
    )
    client = admin_as("migrations:execute")
    detail = client.get(url("change", execution)).content.decode()
    assert "SQLSTATE 42P07" in detail
    assert "CREATE TABLE" in detail  # the failing statement
    assert 'id="retry-failed"' in detail
    confirm = client.get(url("retry", execution)).content.decode()
    assert f"shared-us/{victim.schema_name}" in confirm
    with small_fleet.connect("shared-us") as conn:
        conn.execute(f"DROP TABLE {victim.schema_name}.projects")
    response = client.post(url("retry", execution), {"post": "yes"})
    retry = MigrationExecution.objects.exclude(pk=execution.pk).get()
    assert response["Location"] == url("progress", retry)
    assert retry.parent_id == execution.pk
    assert [r.label for r in retry.targets.all()] == [f"shared-us/{victim.schema_name}"]
    assert retry.status == ExecutionStatus.COMPLETED
    assert LogEntry.objects.filter(object_id=str(execution.pk), action_flag=CHANGE).exists()
    assert f'href="{url("change", retry)}"' in client.get(url("change", execution)).content.decode()


def test_rollback_confirmation_lists_undo_scripts_then_undoes(small_fleet, admin_as, inline):
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    client = admin_as("migrations:execute")
    page = client.get(url("rollback", execution)).content.decode()
    assert "U9__" in page
    assert "U1__" in page
    client.post(url("rollback", execution), {"post": "yes"})
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.ROLLED_BACK
    rollback = execution.spawned.get()
    assert rollback.kind == "rollback"
    assert rollback.origin == Origin.ADMIN


def test_rollback_without_an_undo_script_is_refused_on_the_confirmation_page(small_fleet, sets_dir, admin_as, inline):
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    (sets_dir / "tenant" / "U9__index_open_tasks_by_due_date.sql").unlink(missing_ok=True)
    for undo in (sets_dir / "tenant").glob("U9__*.sql"):
        undo.unlink()
    client = admin_as("migrations:execute")
    page = client.get(url("rollback", execution)).content.decode()
    assert 'id="rollback-refused"' in page
    assert "missing" in page
    assert 'id="confirm-action"' not in page
    client.post(url("rollback", execution), {"post": "yes"})
    assert not execution.spawned.exists()
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED


def test_a_reader_sees_executions_but_no_action_and_forged_posts_are_403(small_fleet, admin_as, launch_held):
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(), actor="t", origin=Origin.API
    )
    client = admin_as("migrations:read")
    assert client.get(CHANGELIST).status_code == 200
    assert 'id="run-migrations"' not in client.get(CHANGELIST).content.decode()
    detail = client.get(url("change", execution))
    assert detail.status_code == 200
    assert 'id="execution-actions"' not in detail.content.decode()
    assert client.get(url("progress", execution)).status_code == 200
    assert client.get(RUN).status_code == 403
    assert client.get(PREVIEW, {"scope": "tenant", "on_failure": "continue", "batch_size": 4}).status_code == 403
    assert client.post(CONFIRM, {"scope": "tenant", "on_failure": "continue", "batch_size": 4}).status_code == 403
    for action in ("cancel", "retry", "rollback"):
        assert client.post(url(action, execution), {"post": "yes"}).status_code == 403
    assert MigrationExecution.objects.count() == 1
    execution.refresh_from_db()
    assert execution.cancel_requested is False


def test_cancel_goes_through_a_confirmation_page(small_fleet, admin_as, settings):
    settings.MIGRATION_EXECUTOR = "queue"  # no worker runs: the execution waits
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(), actor="t", origin=Origin.API
    )
    client = admin_as("migrations:execute")
    page = client.get(url("cancel", execution)).content.decode()
    assert 'id="confirm-action"' in page
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.IN_PROGRESS
    client.post(url("cancel", execution), {"post": "yes"})
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED
    assert LogEntry.objects.filter(object_id=str(execution.pk), change_message="Cancelled").exists()


def test_search_finds_executions_by_tenant_and_by_id_prefix(small_fleet, admin_as, inline):
    first = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us001"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["eu002"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    client = admin_as("migrations:read")
    assert list(client.get(CHANGELIST, {"q": "us001"}).context["cl"].result_list) == [first]
    assert list(client.get(CHANGELIST, {"q": str(first.pk)[:8]}).context["cl"].result_list) == [first]


def bulk_execution(connection: DatabaseConnection, runs: int) -> MigrationExecution:
    """An execution with ``runs`` target runs, half finished, some failed, a few running (rows only)."""
    execution = MigrationExecution.objects.create(
        scope="tenant", executed_by="bulk", status=ExecutionStatus.IN_PROGRESS, started_at=timezone.now()
    )
    statuses = [TargetStatus.SUCCEEDED, TargetStatus.FAILED, TargetStatus.PENDING, TargetStatus.RUNNING]
    rows = [
        TargetRun(
            execution=execution,
            connection=connection,
            schema_name=f"tenant_{uuid.uuid4().hex[:12]}",
            database_type="tenant",
            region="us-east",
            status=statuses[i % 4],
            server="h:1",
            error={"kind": "sql", "message": "boom", "sqlstate": "42P07"} if i % 4 == 1 else None,
        )
        for i in range(runs)
    ]
    TargetRun.objects.bulk_create(rows, batch_size=500)
    MigrationExecution.objects.filter(pk=execution.pk).update(
        targets_total=runs, targets_succeeded=runs // 4, targets_failed=runs // 4
    )
    return execution


@pytest.mark.parametrize("runs", [10, 1000])
def test_query_counts_do_not_grow_with_target_runs(small_fleet, admin_as, django_assert_max_num_queries, runs):
    connection = small_fleet.connections["shared-us"]
    for _ in range(3):
        execution = bulk_execution(connection, runs)
    client = admin_as("migrations:execute")
    client.get(CHANGELIST)  # warm the session and the sets cache
    with django_assert_max_num_queries(12):
        assert client.get(CHANGELIST).status_code == 200
    with django_assert_max_num_queries(16):
        assert client.get(url("change", execution)).status_code == 200
    with django_assert_max_num_queries(9):  # 8, and the cache entry of a lane waiting for a slot
        assert client.get(url("progress_fragment", execution)).status_code == 200


def test_waves_run_from_the_form_show_as_segments_and_continue_from_the_progress_page(small_fleet, admin_as, inline):
    client = admin_as("migrations:execute")
    wanted = {"scope": "tenant", "on_failure": "continue", "batch_size": 4, "waves": "2", "wave_approval": "on"}
    refused = client.get(PREVIEW, {**wanted, "waves": "2, lots"})
    assert refused.status_code == 400
    assert "neither a count" in refused.content.decode()
    fields = hidden_inputs(client.get(PREVIEW, wanted).content.decode())
    response = client.post(CONFIRM, fields)
    execution = MigrationExecution.objects.get()
    assert response["Location"] == url("progress", execution)
    progress = client.get(url("progress", execution)).content.decode()
    assert 'id="wave-bar"' in progress
    assert progress.count('class="infra-wave ') == 2
    assert 'id="continue-wave"' in progress
    assert "Wave 2 (4 target(s)) is awaiting approval" in progress
    listing = client.get(CHANGELIST).content.decode()
    assert "awaiting approval" in listing
    reader = admin_as("migrations:read")
    assert 'id="continue-wave"' not in reader.get(url("progress", execution)).content.decode()
    assert reader.post(url("continue", execution), {"post": "yes"}).status_code == 403
    client = admin_as("migrations:execute")
    confirm = client.get(url("continue", execution)).content.decode()
    assert "Start wave 2 of 2 (4 target(s))" in confirm
    assert client.post(url("continue", execution), {"post": "yes"}).status_code == 302
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    assert LogEntry.objects.filter(object_id=str(execution.pk), change_message="Next wave approved").exists()
    again = client.get(url("abort", execution)).content.decode()
    assert 'id="not-waiting"' in again


@pytest.mark.parametrize("value", ["abc", "99999999999999999999999", "1.5"])
def test_a_value_that_is_no_tenant_id_is_a_form_error_in_preview_and_confirm(admin_as, value):
    client = admin_as("migrations:execute")
    form = {"scope": "tenant", "tenants": [value], "on_failure": "continue", "batch_size": 4}
    for response in (client.get(PREVIEW, form), client.post(CONFIRM, {**form, "fingerprint": "forged"})):
        assert response.status_code == 400
        assert "not a tenant id" in response.context["form"].errors["tenants"][0]
        assert "not a tenant id" in response.content.decode()
    assert not MigrationExecution.objects.exists()
