"""Claiming ahead: a lane with quick targets reserves its next run while it applies the current one, and starts
it in the transaction that records the current one; its fingerprints are read and stored beside it.

The lane's steps are played here one by one (the runner's own claim, apply and record steps), then whole lanes.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from django.db import OperationalError
from django_q.models import OrmQ

from migrations_runner import services, tasks
from migrations_runner.engine import apply as engine
from migrations_runner.models import (
    ExecutionStatus,
    MigrationExecution,
    OnFailure,
    Origin,
    SchemaFingerprint,
    TargetRun,
    TargetStatus,
)
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.services import fingerprints as fingerprint_services
from migrations_runner.services import runner
from migrations_runner.services.runner import ahead as ahead_module
from migrations_runner.services.runner import lanes, runs_fail_lost
from migrations_runner.services.runner.apply import claimed_run_apply
from migrations_runner.services.runner.claims import (
    run_claim,
    run_claim_ahead,
    run_record_and_claim,
    run_record_and_start,
    run_unclaim,
)
from migrations_runner.services.runner.leases import Leases
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

US_TENANTS = TargetSelection(scope="tenant", regions=["us-east"])
ME = "this-host:1"


def submitted(**options) -> MigrationExecution:
    """An execution of the us-east tenants (3) on the queue, with the lanes it queued taken away (no worker)."""
    execution = services.execution_start(
        selection=US_TENANTS, options=ExecutionOptions(**options), actor="test", origin=Origin.API
    )
    OrmQ.objects.all().delete()
    return execution


def state(run: TargetRun) -> tuple[str, str, bool]:
    row = TargetRun.objects.filter(pk=run.pk).values("status", "worker", "started_at").get()
    return row["status"], row["worker"], row["started_at"] is not None


def applied_with_one_ahead(execution: MigrationExecution) -> tuple[TargetRun, TargetRun]:
    """A lane's first run, claimed and applied (not recorded), and the run it claimed ahead meanwhile."""
    first = run_claim(execution=execution, worker=ME)
    (ahead,) = run_claim_ahead(execution=execution, worker=ME, current=first)
    claimed_run_apply(run=first, execution=execution)
    return first, ahead


def test_a_run_claimed_ahead_is_reserved_passed_by_and_started_with_the_last_outcome(small_fleet, queue_here):
    execution = submitted(batch_size=2)
    first = run_claim(execution=execution, worker=ME)
    (ahead,) = run_claim_ahead(execution=execution, worker=ME, current=first)
    try:
        assert ahead is not None
        assert ahead.pk != first.pk
        assert ahead.server == first.server
        # Reserved, not started: pending with the lane's name and a lease, counted by no cap.
        assert state(ahead) == (TargetStatus.PENDING, ME, False)
        assert TargetRun.objects.get(pk=ahead.pk).heartbeat_at is not None
        # Another lane's claim passes it by and takes the third run (the batch of 2 has one running).
        other = run_claim(execution=execution, worker="other-host:9")
        assert other is not None
        assert other.pk not in (first.pk, ahead.pk)
        assert run_claim(execution=execution, worker="other-host:9") is None  # the batch is full; ahead is no slot

        claimed_run_apply(run=first, execution=execution)
        assert first.status == TargetStatus.SUCCEEDED
        assert run_record_and_start(run=first, start=ahead, execution=execution, worker=ME) is True
        assert state(first) == (TargetStatus.SUCCEEDED, ME, True)
        assert state(ahead) == (TargetStatus.RUNNING, ME, True)
        assert TargetRun.objects.get(pk=ahead.pk).started_at == ahead.started_at
        assert MigrationExecution.objects.get(pk=execution.pk).targets_succeeded == 1
    finally:
        for run in (first, ahead):
            Leases.release(run_id=run.pk)


def test_a_run_claimed_ahead_and_cancelled_meanwhile_does_not_start(small_fleet, queue_here):
    execution = submitted(batch_size=1)
    first, ahead = applied_with_one_ahead(execution)
    services.execution_cancel(execution=execution, actor="test")
    assert run_record_and_start(run=first, start=ahead, execution=execution, worker=ME) is False
    assert state(first)[0] == TargetStatus.SUCCEEDED  # its outcome is recorded all the same
    assert state(ahead)[0] == TargetStatus.CANCELLED
    with small_fleet.connect("shared-us") as conn:  # nothing ran on its schema
        history = f"{ahead.schema_name}.infra_schema_history"
        assert conn.execute("SELECT to_regclass(%s)", [history]).fetchone()[0] is None
    Leases.release(run_id=ahead.pk)


def test_a_run_claimed_ahead_of_a_run_recovered_meanwhile_does_not_start_and_is_given_back(small_fleet, queue_here):
    execution = submitted(batch_size=1)
    first, ahead = applied_with_one_ahead(execution)
    TargetRun.objects.filter(pk=first.pk).update(status=TargetStatus.FAILED)  # the recovery failed it as lost
    assert run_record_and_start(run=first, start=ahead, execution=execution, worker=ME) is False
    assert state(first)[0] == TargetStatus.FAILED  # the recovery's record stands
    assert state(ahead) == (TargetStatus.PENDING, ME, False)  # not started: the caps never counted it
    run_unclaim(runs=[ahead], worker=ME)
    assert state(ahead) == (TargetStatus.PENDING, "", False)
    claimed = run_claim(execution=execution, worker=ME)
    Leases.release(run_id=claimed.pk)
    assert claimed.pk == ahead.pk  # any lane may claim it now


def test_a_failure_that_halts_gives_back_the_run_claimed_ahead_to_be_skipped(small_fleet, queue_here):
    execution = submitted(batch_size=1, on_failure=OnFailure.HALT)
    first = run_claim(execution=execution, worker=ME)
    (ahead,) = run_claim_ahead(execution=execution, worker=ME, current=first)
    first.status, first.error = TargetStatus.FAILED, {"kind": "sql", "message": "boom"}
    assert run_record_and_claim(run=first, execution=execution, worker=ME, claim=True, release=[ahead]) is None
    assert state(ahead) == (TargetStatus.SKIPPED, "", False)
    assert not execution.targets.filter(status__in=[TargetStatus.PENDING, TargetStatus.RUNNING]).exists()


def test_a_failure_that_halts_gives_back_every_run_claimed_ahead(small_fleet, queue_here):
    execution = submitted(batch_size=1, on_failure=OnFailure.HALT)
    first = run_claim(execution=execution, worker=ME)
    held = run_claim_ahead(execution=execution, worker=ME, current=first, count=5)
    assert [run.pk for run in held] == sorted(run.pk for run in held)  # in the order the lane applies them
    assert len(held) == 2  # the other two of us-east's three: as many as there are, up to the count
    first.status, first.error = TargetStatus.FAILED, {"kind": "sql", "message": "boom"}
    assert run_record_and_claim(run=first, execution=execution, worker=ME, claim=True, release=held) is None
    assert [state(run) for run in held] == [(TargetStatus.SKIPPED, "", False)] * 2
    assert not any(run.pk in Leases._held for run in held)


def test_a_lane_leaving_gives_back_the_runs_it_still_holds_ahead(small_fleet, queue_here):
    execution = submitted(batch_size=1)
    first = run_claim(execution=execution, worker=ME)
    control = ahead_module.LaneControl(execution=execution, worker=ME)
    control.claim_ahead(current=first, seconds=0.001)  # quick enough to hold both others
    second = control.take()
    assert second is not None
    assert state(second) == (TargetStatus.PENDING, ME, False)
    control.close(failed=False)
    third = execution.targets.exclude(pk__in=[first.pk, second.pk]).get()
    assert state(third) == (TargetStatus.PENDING, "", False)  # given back: any lane may claim it
    assert third.pk not in Leases._held
    assert state(second) == (TargetStatus.PENDING, ME, False)  # taken: the lane's to start or give back
    run_unclaim(runs=[second], worker=ME)
    Leases.release(run_id=first.pk)


def test_the_recovery_gives_back_the_runs_a_lost_worker_claimed_ahead(small_fleet, queue_here):
    queue_here.MIGRATION_LEASE_SECONDS = 1
    execution = submitted(batch_size=1)
    first = run_claim(execution=execution, worker="dead-host:7")
    (ahead,) = run_claim_ahead(execution=execution, worker="dead-host:7", current=first)
    for run in (first, ahead):
        Leases.release(run_id=run.pk)  # the worker died: nothing renews the leases
    wait_until(lambda: runs_fail_lost() == 1, timeout=10, message="the lost run was not failed")
    assert state(first) == (TargetStatus.FAILED, "dead-host:7", True)
    assert state(ahead) == (TargetStatus.PENDING, "", False)  # never started: any lane may claim it again
    assert tasks.run_lane(str(execution.pk)) == "done after 2 target(s)"
    execution.refresh_from_db()
    assert (execution.targets_succeeded, execution.targets_failed) == (2, 1)


def _lane_swaps(monkeypatch) -> list[int]:
    """The runs a lane started in place of the one it recorded (``run_record_and_start`` as lanes call it)."""
    started: list[int] = []
    real = lanes.run_record_and_start

    def counted(*, run, start, execution, worker):
        result = real(run=run, start=start, execution=execution, worker=worker)
        if result:
            started.append(start.pk)
        return result

    monkeypatch.setattr(lanes, "run_record_and_start", counted)
    return started


def test_a_lane_with_quick_targets_claims_ahead_and_one_with_slow_ones_does_not(small_fleet, queue_here, monkeypatch):
    swaps = _lane_swaps(monkeypatch)
    execution = submitted(batch_size=1)
    assert tasks.run_lane(str(execution.pk)) == "done after 3 target(s)"
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    runs = list(execution.targets.order_by("started_at"))
    # The first target is claimed alone (how long targets take is not known yet), the second with the first's
    # outcome, while the lane claims the third ahead.
    assert swaps == [run.pk for run in runs[2:]]
    for before, after in itertools.pairwise(runs):
        assert after.started_at >= before.completed_at  # one target at a time: claimed ahead, started after

    swaps.clear()
    queue_here.MIGRATION_CLAIM_AHEAD_BELOW_S = 0  # no target is quick enough
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", regions=["eu-west"]),
        options=ExecutionOptions(batch_size=1),
        actor="test",
        origin=Origin.API,
    )
    OrmQ.objects.all().delete()
    assert tasks.run_lane(str(execution.pk)) == "done after 3 target(s)"
    assert swaps == []


def test_a_lane_reads_and_stores_its_fingerprints_beside_its_targets(small_fleet, queue_here, monkeypatch):
    threads: list[str] = []
    real = fingerprint_services.fingerprint.read_fingerprints

    def recorded(conn, schemas):
        threads.append(threading.current_thread().name)
        return real(conn, schemas)

    monkeypatch.setattr(fingerprint_services.fingerprint, "read_fingerprints", recorded)
    execution = submitted(batch_size=1)
    assert tasks.run_lane(str(execution.pk)) == "done after 3 target(s)"
    assert threads
    assert all(name.startswith("lane-fingerprints") for name in threads)
    schemas = {tenant.schema_name for tenant in small_fleet.tenants_in("us-east")}
    assert set(SchemaFingerprint.objects.filter(execution=execution).values_list("schema_name", flat=True)) == schemas
    # The thread beside closed its connection to the target database as the lane left; the lane's own stays
    # open for the worker's next lane (a queue worker keeps its connections).
    with small_fleet.connect("shared-us") as conn:
        database = small_fleet.databases["shared-us"]
        others = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        wait_until(lambda: conn.execute(others, [database]).fetchone()[0] == 1, timeout=10)


def test_a_lane_that_dies_recording_stops_renewing_the_run_it_claimed_ahead(small_fleet, queue_here, monkeypatch):
    queue_here.MIGRATION_LEASE_SECONDS = 1
    execution = submitted(batch_size=1)
    ahead: list[TargetRun] = []

    def control_database_gone(*, run, start, execution, worker):
        ahead.append(start)
        raise OperationalError("the control database stayed unreachable")

    monkeypatch.setattr(lanes, "run_record_and_start", control_database_gone)
    with pytest.raises(OperationalError):
        tasks.run_lane(str(execution.pk))
    (reserved,) = ahead
    assert reserved.pk not in Leases._held  # nothing renews its lease any more
    assert state(reserved) == (TargetStatus.PENDING, runner.worker_name(), False)
    # The run at work is failed as lost and the reserved one given back once each lease ran out (the reserved
    # one's may run out a recovery later: it was renewed last when it was claimed ahead).
    failed: list[int] = []
    wait_until(
        lambda: failed.append(runs_fail_lost()) or state(reserved)[1] == "",
        timeout=10,
        message="the run claimed ahead was not given back",
    )
    assert sum(failed) == 1  # the run at work, failed as lost
    assert state(reserved) == (TargetStatus.PENDING, "", False)  # given back: the execution does not hang on it
    monkeypatch.undo()
    assert tasks.run_lane(str(execution.pk)) == "done after 1 target(s)"
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED
    assert (execution.targets_succeeded, execution.targets_failed) == (2, 1)


def test_a_lane_with_very_quick_targets_claims_several_ahead_in_one_statement(small_fleet, queue_here, monkeypatch):
    swaps = _lane_swaps(monkeypatch)
    claims_ahead: list[tuple[int, list[int]]] = []
    real = ahead_module.run_claim_ahead

    def counted(*, execution, worker, current, count):
        held = real(execution=execution, worker=worker, current=current, count=count)
        claims_ahead.append((count, [run.pk for run in held]))
        return held

    monkeypatch.setattr(ahead_module, "run_claim_ahead", counted)
    monkeypatch.setattr(ahead_module, "AHEAD_WINDOW_S", 3600)  # every target fits: as many as AHEAD_MAX
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(batch_size=1),
        actor="test",
        origin=Origin.API,
    )
    OrmQ.objects.all().delete()
    runs = execution.targets.count()
    assert runs == 6
    assert tasks.run_lane(str(execution.pk)) == f"done after {runs} target(s)"
    execution.refresh_from_db()
    assert (execution.status, execution.targets_succeeded) == (ExecutionStatus.COMPLETED, runs)
    # The first claimed alone, the second with the first's outcome; then the four others in one claim ahead,
    # started one after another in place of the run before; one more claim ahead found nothing left.
    (count, held), *rest = claims_ahead
    assert count == ahead_module.AHEAD_MAX
    assert len(held) == runs - 2
    assert swaps == held
    assert rest == [(ahead_module.AHEAD_MAX, [])]
    ordered = list(execution.targets.order_by("started_at"))
    for before, after in itertools.pairwise(ordered):
        assert after.started_at >= before.completed_at  # still one target at a time


def _recording_held(monkeypatch) -> tuple[threading.Event, threading.Event, list[TargetRun]]:
    """Hold back the transactions that record a lane's run and start the one it claimed ahead: each waits for the
    ``release`` event returned, after setting ``reached`` and noting the run it starts."""
    reached, release, starts = threading.Event(), threading.Event(), []
    real = lanes.run_record_and_start

    def held(*, run, start, execution, worker):
        starts.append(start)
        reached.set()
        assert release.wait(timeout=60), "the test never released the recording"
        return real(run=run, start=start, execution=execution, worker=worker)

    monkeypatch.setattr(lanes, "run_record_and_start", held)
    return reached, release, starts


def _schema_lock_held(conn, schema: str) -> bool:
    """Whether some session holds the migration lock of ``schema`` (the engine's two-key advisory lock)."""
    query = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
        "AND classid = %s AND objid = (hashtext(%s)::bigint & 4294967295)::oid"
    )
    return conn.execute(query, [engine.LOCK_NAMESPACE, schema]).fetchone()[0] == 1


def _later_table(conn, schema: str):
    return conn.execute("SELECT to_regclass(%s)", [f"{schema}.later"]).fetchone()[0]


def migrated_then_submitted(sets_dir) -> MigrationExecution:
    """The us-east tenants migrated, then a version added to the set and an execution submitted for it: targets
    with a history (a new schema takes its lock in the round trip that creates it, after the recording)."""
    assert tasks.run_lane(str(submitted(batch_size=1).pk)) == "done after 3 target(s)"
    (sets_dir / "tenant" / "V99__later.sql").write_text("CREATE TABLE later (x int);\n")
    return submitted(batch_size=1)


@dataclass
class _HeldLane:
    """A lane in a thread, held at its first recording that starts a run claimed ahead (``started``), after it
    took that run's target lock; ``finish`` releases the recording and waits for the lane to leave."""

    started: TargetRun
    conn: psycopg.Connection
    release: threading.Event
    lane: threading.Thread
    said: list[str]

    def finish(self) -> None:
        self.release.set()
        self.lane.join(timeout=60)
        assert not self.lane.is_alive()


@contextlib.contextmanager
def _lane_held_recording(small_fleet, monkeypatch, execution: MigrationExecution) -> Iterator[_HeldLane]:
    reached, release, starts = _recording_held(monkeypatch)
    said: list[str] = []
    lane = threading.Thread(target=lambda: said.append(tasks.run_lane(str(execution.pk))), name="test-lane")
    lane.start()
    try:
        assert reached.wait(timeout=60), "no run was started in place of another"
        (started,) = starts
        with small_fleet.connect("shared-us") as conn:
            wait_until(lambda: _schema_lock_held(conn, started.schema_name), timeout=30, message="no lock taken")
            yield _HeldLane(started, conn, release, lane, said)
    finally:
        release.set()
        lane.join(timeout=60)


def test_a_lane_goes_on_with_the_run_it_starts_while_recording_the_one_before(
    small_fleet, sets_dir, queue_here, monkeypatch
):
    execution = migrated_then_submitted(sets_dir)
    with _lane_held_recording(small_fleet, monkeypatch, execution) as held:
        # The lane took the next target's lock (and read its history) while the recording waits, and wrote
        # nothing there: the run is not started yet.
        assert state(held.started) == (TargetStatus.PENDING, runner.worker_name(), False)
        assert _later_table(held.conn, held.started.schema_name) is None
        held.finish()
        assert held.said == ["done after 3 target(s)"]
        assert _later_table(held.conn, held.started.schema_name) is not None
    execution.refresh_from_db()
    assert (execution.status, execution.targets_succeeded) == (ExecutionStatus.COMPLETED, 3)
    runs = list(execution.targets.order_by("started_at"))
    for before, after in itertools.pairwise(runs):
        assert after.started_at >= before.completed_at  # the recording settled before the next one wrote


def test_a_run_cancelled_while_the_recording_that_starts_it_is_in_flight_is_left_as_it_was(
    small_fleet, sets_dir, queue_here, monkeypatch
):
    execution = migrated_then_submitted(sets_dir)
    with _lane_held_recording(small_fleet, monkeypatch, execution) as held:
        services.execution_cancel(execution=execution, actor="test")
        held.finish()
        assert _later_table(held.conn, held.started.schema_name) is None  # nothing ran on its schema
        assert not _schema_lock_held(held.conn, held.started.schema_name)  # and its lock was released
    assert held.said
    assert held.said[0].startswith("done after")
    assert state(held.started)[0] == TargetStatus.CANCELLED
    assert held.started.pk not in Leases._held
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED
    assert execution.targets_succeeded == 2  # the two before it, recorded
