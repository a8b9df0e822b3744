"""The lane runner hosted by threads of this process: caps, cancel, counters, the execution's error, no hangs."""

from __future__ import annotations

import threading

import pytest
from django.db import connections as django_connections

from migrations_runner import selectors, services
from migrations_runner.exceptions import ExecutionFinished
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.fleet import create_owned_table
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def slow_down(sets_dir, seconds: float) -> None:
    script = sets_dir / "tenant" / "V2__create_projects.sql"
    script.write_text(f"SELECT pg_sleep({seconds});\n" + script.read_text())


class PeakRunning:
    """Samples the number of running target runs (all executions) from a thread of its own."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        try:
            while not self._stop.is_set():
                self.peak = max(self.peak, TargetRun.objects.filter(status=TargetStatus.RUNNING).count())
                self._stop.wait(0.01)
        finally:
            django_connections.close_all()

    def __enter__(self) -> PeakRunning:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_threads_honour_the_per_server_cap_and_the_batch_size(fleet, sets_dir, settings):
    settings.MIGRATION_MAX_PER_DATABASE = 2
    slow_down(sets_dir, 0.05)
    with PeakRunning() as sampler:
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", regions=["us-east"]),
            options=ExecutionOptions(batch_size=6),
            actor="t",
            origin=Origin.API,
            wait=True,
        )
    assert execution.status == ExecutionStatus.COMPLETED
    assert execution.targets_succeeded == 20
    assert 1 <= sampler.peak <= 2  # one database server, capped at 2 although 6 lanes were allowed

    settings.MIGRATION_MAX_PER_DATABASE = 50
    with PeakRunning() as sampler:
        execution = services.execution_start(
            selection=TargetSelection(scope="tenant", regions=["eu-west"]),
            options=ExecutionOptions(batch_size=3),
            actor="t",
            origin=Origin.API,
            wait=True,
        )
    assert execution.status == ExecutionStatus.COMPLETED
    assert 2 <= sampler.peak <= 3


def test_cancel_stops_a_threaded_execution_between_targets(fleet, sets_dir):
    slow_down(sets_dir, 0.3)
    done: dict = {}
    worker = threading.Thread(
        target=lambda: (
            done.update(
                result=services.execution_start(
                    selection=TargetSelection(scope="tenant"),
                    options=ExecutionOptions(batch_size=2),
                    actor="t",
                    origin=Origin.API,
                    wait=True,
                )
            ),
            django_connections.close_all(),
        )
    )
    worker.start()
    wait_until(lambda: TargetRun.objects.filter(status=TargetStatus.SUCCEEDED).exists(), timeout=60, interval=0.05)
    services.execution_cancel(execution=MigrationExecution.objects.get(), actor="alice")
    worker.join(timeout=60)
    result = done["result"]
    assert result.status == ExecutionStatus.CANCELLED
    assert result.error == "cancelled by alice"
    statuses = set(result.targets.values_list("status", flat=True))
    assert statuses <= {TargetStatus.SUCCEEDED, TargetStatus.CANCELLED}
    assert result.targets_cancelled == result.targets.filter(status=TargetStatus.CANCELLED).count() > 0


def test_counters_match_the_target_runs_and_progress_reads_no_run_rows(fleet, sets_dir, django_assert_max_num_queries):
    table = "projects"
    victim = fleet.tenants[1]
    with fleet.connect("shared-us") as conn:
        create_owned_table(conn, victim.schema_name, table)
    execution = services.execution_start(
        selection=TargetSelection(scope="all"),
        options=ExecutionOptions(batch_size=4),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.FAILED
    actual = {status: execution.targets.filter(status=status).count() for status in TargetStatus.values}
    assert execution.targets_total == sum(actual.values()) == 44
    assert execution.targets_succeeded == actual[TargetStatus.SUCCEEDED] == 43
    assert execution.targets_failed == actual[TargetStatus.FAILED] == 1
    with django_assert_max_num_queries(0):  # a finished execution's progress comes from its own row
        progress = selectors.execution_progress(execution=execution)
    assert progress.completed == 43
    assert progress.failed == 1
    assert progress.completion_percentage == 100.0
    # The execution says why it failed: which target, at which version, with which SQLSTATE.
    assert f"shared-us/{victim.schema_name}" in execution.error
    assert "42P07" in execution.error


def test_halt_records_the_reason_on_the_execution(small_fleet, sets_dir):
    victim = small_fleet.tenants[0]
    with small_fleet.connect("shared-us") as conn:
        create_owned_table(conn, victim.schema_name, "projects")
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(batch_size=1, on_failure="halt"),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.FAILED
    assert execution.error.startswith(f"halted after shared-us/{victim.schema_name} failed")
    assert execution.targets_skipped == execution.targets.filter(status=TargetStatus.SKIPPED).count() > 0


def test_a_dependency_failure_skips_the_next_phase_and_is_counted(small_fleet, sets_dir):
    shared_v2 = sorted((sets_dir / "shared").glob("V2__*.sql"))[0]
    shared_v2.write_text(shared_v2.read_text() + "\nSELECT no_such_column FROM no_such_table;\n")
    execution = services.execution_start(
        selection=TargetSelection(scope="all", regions=["us-east"]),
        options=ExecutionOptions(batch_size=4),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    runs = {run.label: run for run in selectors.execution_targets(execution=execution)}
    assert runs["shared-us/public"].status == TargetStatus.FAILED
    skipped = [run for run in runs.values() if run.status == TargetStatus.SKIPPED]
    assert {run.database_type for run in skipped} == {"tenant"}
    assert all(run.skip_reason.startswith("dependency shared-us/public failed") for run in skipped)
    assert execution.targets_skipped == len(skipped) == 3


def test_a_finished_execution_cannot_be_cancelled_into_another_state(small_fleet):
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
    )
    assert execution.status == ExecutionStatus.COMPLETED
    with pytest.raises(ExecutionFinished, match="already completed"):
        services.execution_cancel(execution=execution, actor="t")
    stored = MigrationExecution.objects.get(pk=execution.pk)
    assert stored.status == ExecutionStatus.COMPLETED
    assert stored.cancel_requested is False
