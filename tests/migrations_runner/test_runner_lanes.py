"""Lanes in the situations a single host rarely shows: another worker holding the batch or the server's cap, a
late outcome after a recovery, sets broken between planning and applying, an unreachable control database.

The "other worker" is played in this process with the runner's own claim, apply and record steps.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection
from django.db import connections as django_connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

from health import probes
from migrations_runner import selectors, services, tasks
from migrations_runner.engine import history
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.services import runner
from migrations_runner.services.runner import control_retry
from migrations_runner.services.runner.apply import claimed_run_apply, lane_connections_close
from migrations_runner.services.runner.claims import run_claim, run_record_and_claim
from migrations_runner.services.runner.leases import Leases
from migrations_runner.services.runner.reachability import servers_unreachable
from migrations_runner.services.targets import target_spec
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

US_TENANTS = TargetSelection(scope="tenant", regions=["us-east"])


def submitted(batch_size: int) -> MigrationExecution:
    """An execution of the us-east tenants on the queue_here, with the lanes it queued taken away (no worker yet)."""
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(batch_size=batch_size), actor="test", origin=Origin.API
    )
    OrmQ.objects.all().delete()
    return execution


def test_a_surplus_lane_leaves_when_the_batch_is_at_work_elsewhere(small_fleet, queue_here):
    execution = submitted(batch_size=1)
    other = run_claim(execution=execution, worker="other-host:9")
    try:
        assert tasks.run_lane(str(execution.pk)) == "full after 0 target(s)"
        assert execution.targets.filter(status=TargetStatus.RUNNING).get().worker == "other-host:9"
        assert execution.targets.filter(status=TargetStatus.PENDING).count() == 2
    finally:
        Leases.release(run_id=other.pk)


def test_a_lane_waits_for_a_slot_under_the_per_server_cap_then_works(small_fleet, queue_here):
    queue_here.MIGRATION_MAX_PER_DATABASE = 1  # the whole fleet is one PostgreSQL server
    execution = submitted(batch_size=2)
    other = run_claim(execution=execution, worker="other-host:9")
    finished_other = threading.Event()

    def other_worker_finishes() -> None:
        try:
            time.sleep(0.5)  # the other worker holds the only slot this long: the lane's wait is what is measured
            claimed_run_apply(run=other, execution=execution)
            run_record_and_claim(run=other, execution=execution, worker="other-host:9", claim=False)
            finished_other.set()
        finally:
            if not finished_other.is_set():
                services.execution_cancel(execution=execution, actor="test")  # never leave the lane waiting
            lane_connections_close()
            django_connections.close_all()

    thread = threading.Thread(target=other_worker_finishes)
    started = time.monotonic()
    thread.start()
    result = tasks.run_lane(str(execution.pk))
    waited = time.monotonic() - started
    thread.join()
    assert finished_other.is_set()
    assert result == "done after 2 target(s)"
    assert waited >= 0.5  # nothing was claimed while the other worker held the server's only slot
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    workers = sorted(execution.targets.values_list("worker", flat=True))
    assert workers == sorted(["other-host:9", runner.worker_name(), runner.worker_name()])


def test_an_outcome_that_arrives_after_the_recovery_does_not_overwrite_it(small_fleet, queue_here, caplog):
    queue_here.MIGRATION_LEASE_SECONDS = 1
    execution = submitted(batch_size=1)
    slow = run_claim(execution=execution, worker="slow-host:3")
    claimed_run_apply(run=slow, execution=execution)
    assert slow.status == TargetStatus.SUCCEEDED  # applied, not yet recorded
    Leases.release(run_id=slow.pk)  # its heartbeat stalls
    assert wait_until(lambda: tasks.recover_lost_targets(), timeout=10) == 1  # once its lease has expired
    assert run_record_and_claim(run=slow, execution=execution, worker="slow-host:3", claim=False) is None
    assert "target run was recovered before its outcome was recorded" in caplog.text
    slow.refresh_from_db()
    assert slow.status == TargetStatus.FAILED
    assert slow.error["kind"] == "worker_lost"
    assert slow.to_version == "9"  # what the target's history showed the recovery
    execution.refresh_from_db()
    assert (execution.targets_succeeded, execution.targets_failed) == (0, 1)


def test_sets_broken_between_planning_and_applying_fail_the_targets_instead_of_hanging(
    small_fleet, sets_dir, launch_held
):
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(), actor="test", origin=Origin.API
    )
    (sets_dir / "tenant" / "V10_no_separator.sql").write_text("SELECT 1;")
    execution = services.execution_run(execution=execution)
    assert execution.status == ExecutionStatus.FAILED
    runs = list(execution.targets.all())
    assert [r.status for r in runs] == [TargetStatus.FAILED] * 3
    assert {r.error["kind"] for r in runs} == {"internal"}
    assert all("problem(s); fix them before running" in r.error["message"] for r in runs)
    with small_fleet.connect("shared-us") as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'infra_schema_history'").fetchone()[0] == 0
        )


def test_a_control_database_step_is_retried_until_the_database_is_back(settings):
    settings.MIGRATION_CONTROL_DB_WAIT = 30
    attempts: list[float] = []

    def record() -> str:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        if len(attempts) == 2:
            raise InterfaceError("connection already closed")
        return "recorded"

    assert control_retry(record)() == "recorded"
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 0.2  # it backs off between attempts
    assert attempts[2] - attempts[1] >= 0.4


def test_a_control_database_step_gives_up_after_the_configured_wait(settings):
    settings.MIGRATION_CONTROL_DB_WAIT = 0
    attempts: list[int] = []

    def record() -> None:
        attempts.append(1)
        raise OperationalError("could not connect to server")

    with pytest.raises(OperationalError, match="could not connect"):
        control_retry(record)()
    assert len(attempts) == 1


@pytest.mark.timeout(60)
def test_a_lane_waiting_for_a_slot_fails_the_lost_run_that_holds_it(small_fleet, queue_here):
    # The recovery task may wait in the queue behind this very lane: the lane frees the slot itself.
    queue_here.MIGRATION_MAX_PER_DATABASE = 1
    queue_here.MIGRATION_LEASE_SECONDS = 1
    execution = submitted(batch_size=2)
    lost = run_claim(execution=execution, worker="dead-host:7")
    Leases.release(run_id=lost.pk)  # its worker died: nothing renews the lease
    assert tasks.run_lane(str(execution.pk)) == "done after 2 target(s)"
    lost.refresh_from_db()
    assert lost.status == TargetStatus.FAILED
    assert lost.error["kind"] == "worker_lost"
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED
    assert (execution.targets_succeeded, execution.targets_failed) == (2, 1)


@pytest.mark.timeout(60)
def test_a_lane_waiting_for_a_slot_hands_its_worker_back_and_is_no_progress(small_fleet, queue_here):
    queue_here.MIGRATION_MAX_PER_DATABASE = 1
    queue_here.MIGRATION_LANE_SECONDS = 1
    queue_here.MIGRATION_WORKER_WAIT = 0
    execution = submitted(batch_size=2)
    other = run_claim(execution=execution, worker="other-host:9")  # its lease is renewed: the slot is held, not lost
    try:
        active_at = MigrationExecution.objects.get(pk=execution.pk).active_at
        assert tasks.run_lane(str(execution.pk)) == "waited for a slot, handed over after 0 target(s)"
        assert OrmQ.objects.count() == 1  # its successor, behind whatever else waits for a worker
        execution.refresh_from_db()
        assert execution.active_at == active_at
        assert selectors.lane_waiting(execution_id=execution.pk)
        progress = selectors.execution_progress(execution=execution)
        assert (progress.running, progress.no_worker) == (1, False)
    finally:
        Leases.release(run_id=other.pk)


def test_a_run_whose_lease_expired_is_no_worker_and_a_live_lease_is_one(small_fleet, queue_here, api_as):
    queue_here.MIGRATION_WORKER_WAIT = 0
    queue_here.MIGRATION_LEASE_SECONDS = 5
    execution = submitted(batch_size=2)
    run = run_claim(execution=execution, worker="other-host:9")
    reader = api_as("migrations:read")

    def listed_state() -> str:
        (shown,) = [e for e in reader.get("/api/v1/migrations/").json()["results"] if e["id"] == str(execution.pk)]
        return shown["progress"]["state"]

    try:
        with CaptureQueriesContext(connection) as captured:
            assert not selectors.execution_progress(execution=execution).no_worker
        # The running runs' labels and leases come in one read.
        assert sum('"migrations_runner_targetrun"' in q["sql"] for q in captured.captured_queries) == 1
        assert listed_state() == "running"
        queue = probes.system_health(only=probes.TASK_QUEUE).services[0]
        assert queue.is_healthy, queue.details  # no periodic check ran, but a lane renews its lease
        assert queue.details["last_worker_activity"] is not None
        Leases.release(run_id=run.pk)  # its worker died
        long_ago = timezone.now() - timedelta(minutes=5)
        TargetRun.objects.filter(pk=run.pk).update(heartbeat_at=long_ago)
        MigrationExecution.objects.filter(pk=execution.pk).update(active_at=long_ago)
        execution.refresh_from_db()
        progress = selectors.execution_progress(execution=execution)
        assert (progress.running, progress.no_worker, progress.state) == (1, True, "waiting_for_worker")
        assert listed_state() == "waiting_for_worker"
        assert not probes.system_health(only=probes.TASK_QUEUE).services[0].is_healthy
    finally:
        Leases.release(run_id=run.pk)


def test_a_server_marked_unreachable_long_ago_is_probed_before_its_targets_fail(small_fleet, settings, launch_held):
    settings.MIGRATION_FLEET_DB_WAIT = 1
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(), actor="test", origin=Origin.API
    )
    server = execution.targets.values_list("server", flat=True).first()
    cache.set(runner.UNREACHABLE_KEY, {server: {"since": time.time() - 600, "error": "connection refused"}})
    execution = services.execution_run(execution=execution)
    assert execution.status == ExecutionStatus.COMPLETED
    assert servers_unreachable() == {}


def test_a_set_changed_on_disk_mid_run_fails_the_targets_a_lane_claims_after_its_next_check(fleet, sets_dir):
    """A lane stats the set files when it starts and then every SETS_RECHECK_S, not per target: the targets it
    claims after the change is seen fail with set_changed, none applies the changed script."""
    tenant = sets_dir / "tenant"
    for script in tenant.iterdir():
        script.unlink()
    (tenant / "V1__slow.sql").write_text("CREATE TABLE slow (id int);\nSELECT pg_sleep(0.2);\n")
    result: dict[str, MigrationExecution] = {}
    worker = threading.Thread(
        target=lambda: result.update(
            execution=services.execution_start(
                selection=US_TENANTS,
                options=ExecutionOptions(batch_size=1),
                actor="test",
                origin=Origin.API,
                wait=True,
            )
        )
    )
    worker.start()
    wait_until(
        lambda: TargetRun.objects.filter(status=TargetStatus.SUCCEEDED).exists(),
        timeout=30,
        message="no target finished",
    )
    (tenant / "V1__slow.sql").write_text("CREATE TABLE changed (id int);\n")
    worker.join(timeout=120)

    runs = list(result["execution"].targets.order_by("id"))
    assert len(runs) == 20
    statuses = [r.status for r in runs]
    assert statuses[0] == TargetStatus.SUCCEEDED
    assert statuses[-1] == TargetStatus.FAILED  # claimed seconds after the change: the lane checked again
    first_failed = statuses.index(TargetStatus.FAILED)
    assert set(statuses[first_failed:]) == {TargetStatus.FAILED}  # one lane: in claim order, none after succeeds
    assert {r.error["kind"] for r in runs[first_failed:]} == {"set_changed"}


def test_a_lane_locks_a_schema_the_plan_found_without_history_in_the_round_trip_that_creates_it(
    small_fleet, queue_here, monkeypatch
):
    guesses: dict[str, bool] = {}
    real = history.try_lock_and_read

    def noted(conn, schema, lock_namespace, *, expect_history=True):
        guesses[schema] = expect_history
        return real(conn, schema, lock_namespace, expect_history=expect_history)

    monkeypatch.setattr(history, "try_lock_and_read", noted)
    execution = submitted(batch_size=1)
    runs = list(execution.targets.select_related("connection", "tenant"))
    assert {run.from_version for run in runs} == {""}  # new tenants: the plan read no version
    assert tasks.run_lane(str(execution.pk)) == "done after 3 target(s)"
    # Each took its lock in the round trip that created it (no history to read); none was read apart.
    assert guesses == {}
    assert execution.targets.filter(status="succeeded").count() == 3
    runs[0].from_version = "1"  # a schema the plan found at a version: its history is read with the lock
    assert target_spec(runs[0], execution).expect_history is True
