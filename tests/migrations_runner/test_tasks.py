"""The django-q2 task functions, called in this process as a qcluster worker would call them.

Coverage does not follow qcluster children, so these tests take the tasks the services queued (django-q2's ORM
broker, a table of the control database) and run each one here: lanes, the recovery of lost target runs, the
firing of schedules, and fingerprint scans.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from psycopg import sql

from connections.models import DatabaseConnection, Tenant
from infra_site import roles
from migrations_runner import services, tasks
from migrations_runner.models import (
    ExecutionStatus,
    FingerprintScan,
    MigrationExecution,
    Origin,
    SchemaFingerprint,
    TargetStatus,
)
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.services import runner
from migrations_runner.services.runner.apply import claimed_run_apply
from migrations_runner.services.runner.claims import run_claim
from migrations_runner.services.runner.leases import Leases
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TASKS = {
    "migrations_runner.tasks.run_lane": tasks.run_lane,
    "migrations_runner.tasks.fire_schedule": tasks.fire_schedule,
    "migrations_runner.tasks.recover_lost_targets": tasks.recover_lost_targets,
    "migrations_runner.tasks.run_fingerprint_scan": tasks.run_fingerprint_scan,
}
US_TENANTS = TargetSelection(scope="tenant", regions=["us-east"])


def queued() -> list[dict]:
    """The task packages waiting in the broker, oldest first."""
    return [item.task for item in OrmQ.objects.order_by("id")]


def work_queue(limit: int = 50) -> list[str]:
    """Take the queued tasks one at a time and run each here, as a worker would; return their results."""
    results: list[str] = []
    while (item := OrmQ.objects.order_by("id").first()) is not None:
        assert len(results) < limit, "the queue never drained"
        package = item.task
        item.delete()
        results.append(TASKS[package["func"]](*package["args"], **package.get("kwargs", {})))
    return results


def tenant_versions(fleet, tenant) -> list[str]:
    query = sql.SQL("SELECT version FROM {}.infra_schema_history WHERE type = 'SQL' ORDER BY installed_rank").format(
        sql.Identifier(tenant.schema_name)
    )
    with fleet.connect(tenant.connection.name) as conn:
        return [row[0] for row in conn.execute(query)]


ALL_VERSIONS = [str(v) for v in range(1, 10)]


def test_submitting_queues_one_lane_task_per_lane_and_run_lane_finishes_the_execution(small_fleet, queue_here):
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(batch_size=2), actor="test", origin=Origin.API
    )
    assert execution.status == ExecutionStatus.IN_PROGRESS
    lanes = queued()
    assert [(t["func"], t["args"], t["group"]) for t in lanes] == [
        ("migrations_runner.tasks.run_lane", (str(execution.pk),), str(execution.pk))
    ] * 2
    # The first lane claims every target in turn and ends the execution; the second finds it done.
    assert work_queue() == ["done after 3 target(s)", "done after 0 target(s)"]
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.targets_succeeded == 3
    assert set(execution.targets.values_list("worker", flat=True)) == {runner.worker_name()}
    for tenant in small_fleet.tenants_in("us-east"):
        assert tenant_versions(small_fleet, tenant) == ALL_VERSIONS
    for tenant in small_fleet.tenants_in("eu-west"):
        assert tenant.schema_name not in {r.schema_name for r in execution.targets.all()}


def test_a_lane_past_its_time_queues_a_successor_and_hands_over(small_fleet, queue_here):
    queue_here.MIGRATION_LANE_SECONDS = 1e-6  # every lane is past its time at its first target (a claim takes longer)
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(batch_size=1), actor="test", origin=Origin.API
    )
    assert len(queued()) == 1
    results = work_queue()
    # Each lane works one target and hands over to the successor it queued; the last successor finds it done.
    assert results == ["handed over after 1 target(s)"] * 3 + ["done after 0 target(s)"]
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    assert list(execution.targets.values_list("status", flat=True)) == [TargetStatus.SUCCEEDED] * 3


def test_run_lane_of_a_finished_execution_does_nothing(small_fleet, queue_here):
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(batch_size=1), actor="test", origin=Origin.API
    )
    work_queue()
    execution.refresh_from_db()
    finished_at = execution.completed_at
    assert tasks.run_lane(str(execution.pk)) == "done after 0 target(s)"
    execution.refresh_from_db()
    assert execution.completed_at == finished_at
    assert queued() == []


def _die_holding_a_target(execution: MigrationExecution, worker: str):
    """A worker claims a target and applies it, then dies before recording anything (its lease stops)."""
    run = run_claim(execution=execution, worker=worker)
    assert run is not None
    claimed_run_apply(run=run, execution=execution)
    Leases.release(run_id=run.pk)
    OrmQ.objects.all().delete()  # the dead cluster held the queued lanes too
    return run


def test_recovery_leaves_an_execution_that_is_at_work_alone(small_fleet, queue_here):
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(batch_size=2), actor="test", origin=Origin.API
    )
    before = len(queued())
    assert tasks.recover_lost_targets() == 0
    assert len(queued()) == before
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.IN_PROGRESS
    assert execution.targets_failed == 0


def test_recovery_fails_a_lost_run_with_what_its_history_shows_and_restarts_the_lanes(small_fleet, queue_here):
    queue_here.MIGRATION_LEASE_SECONDS = 1
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(batch_size=2), actor="test", origin=Origin.API
    )
    lost = _die_holding_a_target(execution, "dead-host:4242")
    assert tasks.recover_lost_targets() == 0  # its lease has not expired yet
    assert wait_until(lambda: tasks.recover_lost_targets(), timeout=10) == 1  # once it has
    lost.refresh_from_db()
    assert lost.status == TargetStatus.FAILED
    assert lost.error["kind"] == "worker_lost"
    assert lost.error["message"].startswith("worker lost: dead-host:4242 stopped renewing its lease at ")
    assert [a["version"] for a in lost.applied_versions] == ALL_VERSIONS
    assert lost.to_version == "9"
    assert lost.duration_ms >= 1000
    execution.refresh_from_db()
    assert execution.targets_failed == 1
    assert execution.status == ExecutionStatus.IN_PROGRESS
    # The execution had work and no lane at work: lanes are queued again, one per pending target (batch 2).
    assert [t["args"] for t in queued()] == [(str(execution.pk),)] * 2
    assert execution.active_at > timezone.now() - timedelta(seconds=1)
    work_queue()
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED
    assert execution.targets_succeeded == 2
    assert execution.targets_failed == 1
    # A second pass finds nothing more to recover.
    assert tasks.recover_lost_targets() == 0
    assert queued() == []


def test_recovery_under_halt_skips_the_rest_and_ends_the_execution(small_fleet, queue_here, closed_port):
    queue_here.MIGRATION_LEASE_SECONDS = 1
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(batch_size=1, on_failure="halt"), actor="test", origin=Origin.API
    )
    lost = _die_holding_a_target(execution, "dead-host:7")
    # The target's database is unreachable now: recovery cannot read what was applied and records nothing.
    DatabaseConnection.objects.filter(pk=lost.connection_id).update(port=closed_port)
    assert wait_until(lambda: tasks.recover_lost_targets(), timeout=10) == 1  # once its lease has expired
    lost.refresh_from_db()
    assert lost.status == TargetStatus.FAILED
    assert lost.error["kind"] == "worker_lost"
    assert lost.applied_versions == []
    assert lost.to_version == ""
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED
    assert execution.completed_at is not None
    assert execution.error.startswith(f"halted after {lost.label} failed")
    others = execution.targets.exclude(pk=lost.pk)
    assert set(others.values_list("status", flat=True)) == {TargetStatus.SKIPPED}
    assert execution.targets_skipped == others.count() == 2
    assert queued() == []


def test_firing_a_cron_schedule_runs_its_selection_as_the_schedule(small_fleet):
    schedule = services.schedule_create(
        actor="test",
        name="nightly-eu",
        selection=TargetSelection(scope="tenant", regions=["eu-west"]),
        cron_expression="0 3 * * *",
        options=ExecutionOptions(batch_size=2),
    )
    result = tasks.fire_schedule(schedule.pk)
    execution = MigrationExecution.objects.get(pk=result)
    assert execution.executed_by == "schedule:nightly-eu"
    assert execution.origin == Origin.SCHEDULE
    assert execution.batch_size == 2
    assert execution.status == ExecutionStatus.COMPLETED  # MIGRATION_EXECUTOR is inline in the tests
    assert {r.schema_name for r in execution.targets.all()} == {
        t.schema_name for t in small_fleet.tenants_in("eu-west")
    }
    schedule.refresh_from_db()
    assert schedule.last_execution_id == execution.pk
    assert schedule.last_fired_at is not None
    assert schedule.enabled  # a cron schedule keeps firing


def test_a_one_off_schedule_fires_once_then_is_disabled(small_fleet):
    schedule = services.schedule_create(
        actor="test",
        name="once",
        selection=TargetSelection(scope="tenant", tenants=["us001"]),
        run_at=timezone.now() + timedelta(hours=1),
        options=ExecutionOptions(dry_run=True),
    )
    execution = MigrationExecution.objects.get(pk=tasks.fire_schedule(schedule.pk))
    assert execution.dry_run
    assert execution.targets.get().pending_versions == [*ALL_VERSIONS, "R__views.sql"]
    assert tenant_count_with_history(small_fleet) == 0  # a dry run changes nothing
    schedule.refresh_from_db()
    assert not schedule.enabled
    assert tasks.fire_schedule(schedule.pk) == "disabled or deleted"
    assert MigrationExecution.objects.count() == 1


def test_firing_a_deleted_schedule_starts_nothing(db):
    schedule = services.schedule_create(actor="test", name="gone", cron_expression="*/5 * * * *")
    schedule_id = schedule.pk
    services.schedule_delete(schedule=schedule, actor="test")
    assert tasks.fire_schedule(schedule_id) == "disabled or deleted"
    assert not MigrationExecution.objects.exists()


def test_a_schedule_fired_onto_the_queue_is_worked_by_run_lane(small_fleet, queue_here):
    schedule = services.schedule_create(
        actor="test",
        name="queued",
        selection=US_TENANTS,
        cron_expression="0 * * * *",
        options=ExecutionOptions(batch_size=3),
    )
    execution = MigrationExecution.objects.get(pk=tasks.fire_schedule(schedule.pk))
    assert execution.status == ExecutionStatus.IN_PROGRESS
    assert len(queued()) == 3
    work_queue()
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.targets_succeeded == 3


def tenant_count_with_history(fleet) -> int:
    """How many tenant schemas of the fleet have a history table."""
    count = 0
    for name in ("shared-us", "shared-eu"):
        with fleet.connect(name) as conn:
            count += conn.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'infra_schema_history' AND schemaname LIKE 'tenant_%'"
            ).fetchone()[0]
    return count


SCAN_URL = "/api/v1/migrations/fingerprints/scan/"


def test_a_scan_started_from_the_api_runs_on_the_queue_one_at_a_time(small_fleet, queue_here, api_as):
    executor, reader = api_as(roles.MIGRATIONS_EXECUTE), api_as(roles.MIGRATIONS_READ)
    started = executor.post(SCAN_URL, {}, format="json")
    assert started.status_code == 202, started.content
    scan = started.json()
    # Nothing was read in the request: the scan waits for a worker, its progress readable meanwhile.
    assert (scan["state"], scan["done"], scan["total"], scan["finished_at"]) == ("running", 0, 10, None)
    assert [(t["func"], t["args"]) for t in queued()] == [
        ("migrations_runner.tasks.run_fingerprint_scan", (scan["id"],))
    ]
    assert not SchemaFingerprint.objects.exists()

    second = executor.post(SCAN_URL, {"scope": "tenant"}, format="json")
    assert second.status_code == 409
    assert (second.json()["error"], second.json()["details"]["scan"]) == ("fingerprint_scan_running", scan["id"])
    assert FingerprintScan.objects.count() == 1
    assert reader.get(SCAN_URL).json()["state"] == "running"

    assert work_queue() == ["completed"]
    finished = reader.get(f"/api/v1/migrations/fingerprints/scans/{scan['id']}/").json()
    assert (finished["state"], finished["done"], finished["total"], finished["scanned"]) == ("completed", 10, 10, 10)
    assert finished["finished_at"] is not None
    assert SchemaFingerprint.objects.count() == 10
    assert executor.post(SCAN_URL, {"scope": "tenant"}, format="json").status_code == 202  # the next one may start


def test_a_scan_whose_worker_stopped_showing_progress_gives_way_to_a_new_one(small_fleet, queue_here, api_as):
    executor = api_as(roles.MIGRATIONS_EXECUTE)
    lost = executor.post(SCAN_URL, {}, format="json").json()
    OrmQ.objects.all().delete()  # its worker died with it
    assert executor.post(SCAN_URL, {}, format="json").status_code == 409
    silent_since = timezone.now() - timedelta(seconds=2 * queue_here.MIGRATION_TIMEOUT + 61)
    FingerprintScan.objects.filter(pk=lost["id"]).update(active_at=silent_since)
    assert executor.post(SCAN_URL, {}, format="json").status_code == 202
    lost_scan = FingerprintScan.objects.get(pk=lost["id"])
    assert (lost_scan.state, lost_scan.error) == ("failed", "lost: its worker stopped showing progress")
    assert tasks.run_fingerprint_scan(lost["id"]) == "failed"  # a late worker does not revive it
    assert work_queue() == ["completed"]


def test_a_scan_whose_targets_are_gone_by_the_time_it_runs_ends_failed(small_fleet, queue_here, api_as):
    scan = api_as(roles.MIGRATIONS_EXECUTE).post(SCAN_URL, {"tenants": ["us000"]}, format="json").json()
    Tenant.objects.filter(slug="us000").update(status="suspended")
    assert work_queue() == ["failed"]
    failed = FingerprintScan.objects.get(pk=scan["id"])
    assert failed.state == "failed"
    assert failed.error.startswith("No target matches")
    assert failed.finished_at is not None
