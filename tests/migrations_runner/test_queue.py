"""Background execution on real qcluster processes: batch size, sharing, cancel, crash recovery, schedules."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from psycopg import sql

from migrations_runner import selectors, services
from migrations_runner.exceptions import InvalidSchedule
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.fleet import build_fleet, drop_fleet
from tests.support.qcluster import control_env
from tests.support.waiting import wait_finished, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def running_peak(*executions: MigrationExecution, timeout: float = 240) -> int:
    """Sample the targets running at once until every execution has finished; return the most seen."""
    peak = 0

    def sample() -> bool:
        nonlocal peak
        running = TargetRun.objects.filter(execution__in=executions, status=TargetStatus.RUNNING).count()
        peak = max(peak, running)
        for execution in executions:
            execution.refresh_from_db()
        return all(execution.is_finished for execution in executions)

    wait_until(sample, timeout=timeout, interval=0.02, message="the executions did not finish")
    return peak


@pytest.fixture
def big_fleet(pg_server, sets_dir):
    fleet = build_fleet(pg_server, tenants_per_region=30)
    yield fleet
    drop_fleet(fleet)


def test_batch_size_caps_the_targets_in_flight_across_two_clusters(big_fleet, sets_dir, queue_settings, clusters):
    # A cluster may fetch lanes ahead of its free workers; lanes hand over every second, so idle clusters get them.
    queue_settings.MIGRATION_LANE_SECONDS = 1
    slow = sets_dir / "tenant" / "V2__create_projects.sql"
    slow.write_text("SELECT pg_sleep(0.1);\n" + slow.read_text())
    first, second = clusters(count=2, workers=2)
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(batch_size=5),
        actor="test",
        origin=Origin.API,
    )
    assert execution.status == ExecutionStatus.IN_PROGRESS
    peak = running_peak(execution)
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.targets.filter(status=TargetStatus.SUCCEEDED).count() == 60
    assert 2 <= peak <= 5
    workers = {int(w.rsplit(":", 1)[1]) for w in execution.targets.values_list("worker", flat=True)}
    assert workers & first.pids()
    assert workers & second.pids()


def test_cancelling_mid_run_cancels_what_has_not_finished(small_fleet, sets_dir, queue_settings, clusters):
    (sets_dir / "tenant" / "V2__create_projects.sql").write_text(
        "SELECT pg_sleep(0.6);\n" + (sets_dir / "tenant" / "V2__create_projects.sql").read_text()
    )
    clusters(workers=2)
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(batch_size=1),
        actor="test",
        origin=Origin.API,
    )
    wait_until(lambda: execution.targets.filter(status=TargetStatus.SUCCEEDED).exists(), timeout=60, interval=0.05)
    services.execution_cancel(execution=execution, actor="test")
    execution = wait_finished(execution)
    assert execution.status == ExecutionStatus.CANCELLED
    statuses = list(execution.targets.values_list("status", flat=True))
    assert TargetStatus.SUCCEEDED in statuses
    assert TargetStatus.CANCELLED in statuses
    assert set(statuses) <= {TargetStatus.SUCCEEDED, TargetStatus.CANCELLED}


LOST_WITHIN = 50  # seconds: MIGRATION_LEASE_SECONDS (6 here) + django-q2's 30 s scheduler cycle + slack


def test_a_killed_worker_is_detected_and_retry_failed_finishes_the_target(
    small_fleet, sets_dir, queue_settings, clusters
):
    slow = sets_dir / "tenant" / "V2__create_projects.sql"
    original = slow.read_text()
    slow.write_text("SELECT pg_sleep(60);\n" + original)
    clusters(workers=1)
    tenant = small_fleet.tenants[0]
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=[tenant.slug]),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
    )
    run = execution.targets.get()

    def claimed() -> bool:
        run.refresh_from_db()
        return bool(run.worker and run.applied_versions == [] and run.started_at)

    wait_until(claimed, timeout=60)
    # The kill lands in V2: V1's history row is committed, and V2 sleeps for a minute.
    wait_until(lambda: history_versions(small_fleet, tenant) == ["1"], timeout=60, message="V1 was not applied")
    os.kill(int(run.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    killed_at = time.monotonic()
    execution = wait_finished(execution, timeout=LOST_WITHIN + 30)
    assert time.monotonic() - killed_at <= LOST_WITHIN
    run.refresh_from_db()
    assert run.status == TargetStatus.FAILED
    assert run.error["kind"] == "worker_lost"
    # What the lost worker committed is read back from the target's history, so a rollback can undo it.
    assert [a["version"] for a in run.applied_versions] == ["1"]
    assert run.to_version == "1"
    assert execution.status == ExecutionStatus.FAILED
    assert execution.targets_failed == 1
    with small_fleet.connect("shared-us") as conn:
        history = sql.SQL("SELECT version FROM {}.infra_schema_history").format(sql.Identifier(tenant.schema_name))
        versions = [r[0] for r in conn.execute(history)]
        assert versions == ["1"]
        assert conn.execute("SELECT to_regclass(%s)", [f"{tenant.schema_name}.projects"]).fetchone()[0] is None
    slow.write_text(original)
    retry = services.execution_retry(execution=execution, actor="test", origin=Origin.API)
    retry = wait_finished(retry, timeout=60)
    assert retry.status == ExecutionStatus.COMPLETED
    assert retry.metadata["retry_of"] == str(execution.pk)
    assert retry.targets.get().to_version == "9"


def test_a_cron_schedule_fires_and_creates_an_execution(small_fleet, queue_settings, clusters):
    clusters(workers=1)
    schedule = services.schedule_create(
        actor="test",
        name="nightly-tenants",
        selection=TargetSelection(scope="tenant"),
        cron_expression="* * * * *",
        options=ExecutionOptions(dry_run=True),
    )
    assert schedule.q_schedule.func == "migrations_runner.tasks.fire_schedule"
    # Due now rather than at the next minute: django-q2's scheduler fires it on its next cycle (every 30 s).
    Schedule.objects.filter(pk=schedule.q_schedule_id).update(next_run=timezone.now())
    wait_until(
        lambda: MigrationExecution.objects.filter(executed_by="schedule:nightly-tenants").exists(),
        timeout=75,
        interval=0.5,
        message="the schedule did not fire",
    )
    execution = MigrationExecution.objects.filter(executed_by="schedule:nightly-tenants").first()
    assert execution.dry_run
    schedule.refresh_from_db()
    assert schedule.last_execution_id == execution.pk


def test_schedules_reject_bad_cron_and_past_run_at_and_follow_changes(db, settings):
    with pytest.raises(InvalidSchedule, match="not a valid cron expression"):
        services.schedule_create(actor="t", name="bad", cron_expression="every day at noon")
    with pytest.raises(InvalidSchedule, match="in the past"):
        services.schedule_create(actor="t", name="late", run_at=timezone.now() - timedelta(minutes=1))
    once = services.schedule_create(actor="t", name="once", run_at=timezone.now() + timedelta(hours=1))
    assert once.q_schedule.schedule_type == "O"
    services.schedule_update(schedule=once, actor="t", enabled=False)
    once.refresh_from_db()
    assert once.q_schedule is None
    services.schedule_update(schedule=once, actor="t", enabled=True, run_at=None, cron_expression="0 3 * * *")
    once.refresh_from_db()
    assert once.q_schedule.cron == "0 3 * * *"
    q_id = once.q_schedule_id
    services.schedule_delete(schedule=once, actor="t")
    assert not Schedule.objects.filter(pk=q_id).exists()


def test_the_embedded_sqlite_survives_200_targets_on_4_workers(pg_server, sets_dir, queue_settings, clusters):
    fleet = build_fleet(pg_server, tenants_per_region=100)
    try:
        (cluster,) = clusters(workers=4)
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant"),
            options=ExecutionOptions(batch_size=8),
            actor="test",
            origin=Origin.API,
        )
        execution = wait_finished(execution, timeout=300)
        assert execution.status == ExecutionStatus.COMPLETED
        assert execution.targets.filter(status=TargetStatus.SUCCEEDED).count() == 200
        assert "database is locked" not in cluster.output()
    finally:
        drop_fleet(fleet)


def test_the_per_database_cap_holds_across_executions(big_fleet, queue_settings, clusters):
    queue_settings.MIGRATION_MAX_PER_DATABASE = 2
    clusters(count=2, workers=3, MIGRATION_MAX_PER_DATABASE="2")
    first = services.execution_start(
        selection=TargetSelection(scope="tenant", regions=["us-east"]),
        options=ExecutionOptions(batch_size=5),
        actor="a",
        origin=Origin.API,
    )
    second = services.execution_start(
        selection=TargetSelection(scope="tenant", regions=["eu-west"]),
        options=ExecutionOptions(batch_size=5),
        actor="b",
        origin=Origin.API,
    )
    peak = running_peak(first, second)
    assert first.status == second.status == ExecutionStatus.COMPLETED
    assert 1 <= peak <= 2


def test_provisioning_fails_at_version_3_keeps_the_tenant_and_resumes(small_fleet, sets_dir):
    v3 = sets_dir / "tenant" / "V3__create_tasks.sql"
    good = v3.read_text()
    v3.write_text(good + "\nSELECT no_such_column FROM tasks;\n")
    shared = small_fleet.connections["shared-us"]
    tenant, execution = services.tenant_provision(
        slug="newco", name="NewCo", connection=shared, actor="test", origin=Origin.API, wait=True
    )
    assert tenant.status == "provisioning"
    assert "version 3" in tenant.error
    assert "42703" in tenant.error
    with small_fleet.connect("shared-us") as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM tenant_newco.infra_schema_history ORDER BY 1")]
    assert versions == ["1", "2"]
    v3.write_text(good)
    tenant, execution = services.tenant_provision(
        slug="newco", name="NewCo", connection=shared, actor="test", origin=Origin.API, wait=True
    )
    assert tenant.status == "active"
    assert tenant.error == ""
    assert execution.targets.get().to_version == "9"


def test_the_wait_flag_follows_a_queued_execution(small_fleet, queue_settings, clusters):
    import json
    import subprocess
    import sys

    from tests.support.qcluster import ROOT

    clusters(workers=2)
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "run_migrations", "--scope", "tenant", "--wait", "--json"],
        env=control_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["status"] == "completed"
    assert {t["status"] for t in data["targets"]} == {"succeeded"}
    assert all(t["worker"] for t in data["targets"])


def history_versions(fleet, tenant) -> list[str]:
    """The versions recorded in the tenant's history, in order."""
    return sorted(version for version, _ in history_counts(fleet, tenant))


def history_counts(fleet, tenant) -> list[tuple[str, int]]:
    """How often each version is recorded in the tenant's history; [] when the target never got that far."""
    with fleet.connect(tenant.connection.name) as conn:
        table = f"{tenant.schema_name}.infra_schema_history"
        if conn.execute("SELECT to_regclass(%s)", [table]).fetchone()[0] is None:
            return []  # a worker killed before it created the history table
        query = sql.SQL("SELECT version, count(*) FROM {}.infra_schema_history WHERE type = 'SQL' GROUP BY 1").format(
            sql.Identifier(tenant.schema_name)
        )
        return conn.execute(query).fetchall()


def test_two_clusters_share_200_targets_and_a_sigkill_half_way_loses_nothing(
    pg_server, sets_dir, queue_settings, clusters
):
    slow = sets_dir / "tenant" / "V2__create_projects.sql"
    slow.write_text("SELECT pg_sleep(0.1);\n" + slow.read_text())
    fleet = build_fleet(pg_server, tenants_per_region=100)
    queue_settings.MIGRATION_LANE_SECONDS = 3  # lanes hand over often, so both clusters take turns
    try:
        first, _second = clusters(count=2, workers=2)
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant"),
            options=ExecutionOptions(batch_size=6),
            actor="test",
            origin=Origin.API,
        )
        wait_until(
            lambda: execution.targets.filter(status=TargetStatus.SUCCEEDED).count() >= 80,
            timeout=120,
            interval=0.05,
            message="the clusters made no progress",
        )
        first_pids = first.pids()
        os.killpg(first.process.pid, signal.SIGKILL)
        execution = wait_finished(execution, timeout=240)
        runs = list(execution.targets.all())
        assert len(runs) == 200
        workers = {int(run.worker.rsplit(":", 1)[1]) for run in runs if run.worker}
        assert workers & first_pids, f"the killed cluster did no work: {first.output()[-3000:]}"
        assert workers - first_pids, "the surviving cluster did no work"
        for run in runs:
            assert run.status in (TargetStatus.SUCCEEDED, TargetStatus.FAILED), run.status
            if run.status == TargetStatus.FAILED:
                assert run.error["kind"] == "worker_lost", run.error
        for tenant in fleet.tenants:
            assert all(count == 1 for _, count in history_counts(fleet, tenant)), tenant.slug
        if execution.targets_failed:
            retry = wait_finished(
                services.execution_retry(execution=execution, actor="test", origin=Origin.API), timeout=120
            )
            assert retry.status == ExecutionStatus.COMPLETED
        for tenant in fleet.tenants:
            counts = history_counts(fleet, tenant)
            assert len(counts) == 9, tenant.slug
            assert all(count == 1 for _, count in counts), tenant.slug
    finally:
        drop_fleet(fleet)


def test_a_cluster_killed_holding_queued_lanes_is_recovered_within_the_bound(
    small_fleet, sets_dir, queue_settings, clusters
):
    slow = sets_dir / "tenant" / "V2__create_projects.sql"
    slow.write_text("SELECT pg_sleep(2);\n" + slow.read_text())
    # One worker with a queue limit of one: it runs one lane and holds the other, unstarted, in its own queue.
    (doomed,) = clusters(workers=1)
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(batch_size=2),
        actor="test",
        origin=Origin.API,
    )
    wait_until(lambda: execution.targets.filter(status=TargetStatus.RUNNING).exists(), timeout=60, interval=0.05)
    # Both lanes are off the broker: the one running and the one the cluster holds unstarted.
    wait_until(lambda: OrmQ.objects.filter(lock__gt=timezone.now()).count() >= 2, timeout=30, interval=0.05)
    os.killpg(doomed.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    clusters(workers=2)
    execution = wait_finished(execution, timeout=LOST_WITHIN + 60)
    elapsed = time.monotonic() - killed_at
    # The bound: the lease, the scheduler's cycle and the remaining work (at most 6 targets of 2 s on 2 lanes).
    assert elapsed <= LOST_WITHIN + 15, elapsed
    statuses = list(execution.targets.values_list("status", flat=True))
    assert statuses.count(TargetStatus.SUCCEEDED) >= 5
    assert set(statuses) <= {TargetStatus.SUCCEEDED, TargetStatus.FAILED}


def test_workers_killed_holding_every_slot_of_their_server_are_recovered_within_a_minute_three_times(
    pg_server, sets_dir, queue_settings, clusters
):
    # The lanes that django-q2 restarts after the kill find every slot of the server held by the dead runs,
    # while the recovery task queues behind them: the lanes themselves must free the slots.
    queue_settings.MIGRATION_MAX_PER_DATABASE = 4
    queue_settings.MIGRATION_LEASE_SECONDS = 4
    queue_settings.MIGRATION_HEARTBEAT_SECONDS = 0.5
    queue_settings.MIGRATION_LANE_SECONDS = 3
    slow = sets_dir / "tenant" / "V2__create_projects.sql"
    slow.write_text("SELECT pg_sleep(2);\n" + slow.read_text())
    fleet = build_fleet(pg_server, tenants_per_region=17)  # every database on one server: 3 rounds of 11 tenants
    try:
        (cluster,) = clusters(workers=4)
        for round_ in range(3):
            slugs = [tenant.slug for tenant in fleet.tenants[round_ * 11 : (round_ + 1) * 11]]
            execution = services.execution_start(
                selection=TargetSelection(scope="tenant", tenants=slugs),
                options=ExecutionOptions(),
                actor=f"round-{round_}",
                origin=Origin.API,
            )
            running = execution.targets.filter(status=TargetStatus.RUNNING)
            workers = wait_until(
                lambda running=running: running.count() == 4 and set(running.values_list("worker", flat=True)),
                timeout=60,
                interval=0.1,
                message="four targets running",
            )
            pids = {int(worker.rsplit(":", 1)[1]) for worker in workers}
            assert len(pids) == 4
            assert pids <= cluster.pids()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda execution=execution: execution.refresh_from_db() or execution.is_finished,
                timeout=60,
                interval=0.2,
                message=f"round {round_}: the execution finished after its workers were killed",
            )
            runs = list(execution.targets.all())
            lost = [run for run in runs if run.status == TargetStatus.FAILED]
            assert {run.error["kind"] for run in lost} == {"worker_lost"}
            assert {run.worker for run in lost} == set(workers)
            assert [run.status for run in runs].count(TargetStatus.SUCCEEDED) == 11 - len(lost)
            assert execution.status == ExecutionStatus.FAILED
    finally:
        drop_fleet(fleet)


def test_without_a_worker_the_execution_says_so_and_cancel_ends_it(small_fleet, queue_settings, make_user):
    from rest_framework.test import APIClient

    queue_settings.MIGRATION_WORKER_WAIT = 1
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(), actor="test", origin=Origin.API
    )
    assert execution.status == ExecutionStatus.IN_PROGRESS
    assert not selectors.execution_progress(execution=execution).no_worker

    def progress_without_worker() -> selectors.Progress | None:
        execution.refresh_from_db()
        progress = selectors.execution_progress(execution=execution)
        return progress if progress.no_worker else None

    progress = wait_until(progress_without_worker, timeout=30, message="the execution never said it has no worker")
    assert progress.no_worker is True
    assert progress.state == "waiting_for_worker"
    assert progress.pending == 6
    client = APIClient()
    client.force_authenticate(make_user("migrations:execute"))
    body = client.get(f"/api/v1/migrations/status/{execution.pk}/").json()
    assert body["progress"]["state"] == "waiting_for_worker"
    response = client.post(f"/api/v1/migrations/{execution.pk}/cancel/")
    assert response.status_code in (200, 202), response.content
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED
    assert execution.completed_at is not None
    assert set(execution.targets.values_list("status", flat=True)) == {TargetStatus.CANCELLED}
    assert execution.targets_cancelled == 6
