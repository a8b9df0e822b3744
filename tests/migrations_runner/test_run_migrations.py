"""The run_migrations command beyond --sync: its argument checks, the queued modes (no wait, --wait) and the
report of skipped targets."""

from __future__ import annotations

import json
import re
import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.core.management.base import OutputWrapper
from django.db import connections as django_connections
from django.utils import timezone
from django_q.models import OrmQ

from migrations_runner import tasks
from migrations_runner.management.commands.run_migrations import _Follower
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.services.runner.apply import lane_connections_close

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class ThreadWorker:
    """A queue worker in a thread of this process: takes the lane tasks from the broker and runs them."""

    def __init__(self) -> None:
        self.results: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                item = OrmQ.objects.order_by("id").first()
                if item is None:
                    self._stop.wait(0.05)
                    continue
                package = item.task
                item.delete()
                assert package["func"] == "migrations_runner.tasks.run_lane"
                self.results.append(tasks.run_lane(*package["args"]))
        finally:
            lane_connections_close()
            django_connections.close_all()

    def __enter__(self) -> ThreadWorker:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture
def queue(settings):
    settings.MIGRATION_EXECUTOR = "queue"
    return settings


@pytest.mark.parametrize("size", ["0", "501"])
def test_a_batch_size_out_of_range_is_refused_before_anything_is_planned(db, size):
    with pytest.raises(CommandError, match=r"--batch-size must be between 1 and 500\."):
        call_command("run_migrations", "--batch-size", size, stdout=StringIO())
    assert not MigrationExecution.objects.exists()


def test_an_invalid_selection_is_a_clear_error(db):
    with pytest.raises(CommandError, match="Invalid target selection: tenants"):
        call_command("run_migrations", "--scope", "admin", "--tenant", "us000", stdout=StringIO())
    assert not MigrationExecution.objects.exists()


def test_without_sync_the_execution_is_queued_and_the_command_returns_at_once(small_fleet, queue):
    out = StringIO()
    call_command("run_migrations", "--scope", "tenant", stdout=out)
    execution = MigrationExecution.objects.get()
    assert out.getvalue().strip() == f"Execution {execution.pk} queued."
    assert execution.status == ExecutionStatus.IN_PROGRESS
    assert execution.origin == Origin.COMMAND
    assert set(execution.targets.values_list("status", flat=True)) == {TargetStatus.PENDING}
    lanes = [item.task for item in OrmQ.objects.all()]
    assert len(lanes) == min(execution.batch_size, 6)  # a lane per pending target, up to the batch size
    assert {lane["args"] for lane in lanes} == {(str(execution.pk),)}


def test_without_sync_json_prints_the_summary_of_the_queued_execution(small_fleet, queue):
    out = StringIO()
    call_command("run_migrations", "--scope", "tenant", "--region", "eu-west", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["status"] == "in_progress"
    assert data["progress"]["total"] == 3
    assert {t["target"] for t in data["targets"]} == {
        f"shared-eu/{t.schema_name}" for t in small_fleet.tenants_in("eu-west")
    }
    assert {t["status"] for t in data["targets"]} == {"pending"}


def test_wait_follows_the_queued_execution_with_a_line_per_target(small_fleet, queue):
    out = StringIO()
    with ThreadWorker() as worker:
        call_command("run_migrations", "--scope", "tenant", "--wait", "--poll", "0.05", stdout=out)
    execution = MigrationExecution.objects.get()
    assert execution.status == ExecutionStatus.COMPLETED
    assert worker.results, "the worker ran no lane"
    lines = out.getvalue().strip().splitlines()
    progress = [line for line in lines if re.match(r"\d+/6 succeeded shared-(us|eu)/tenant_", line)]
    assert [line.split()[0] for line in progress] == [f"{n}/6" for n in range(1, 7)]
    assert lines[-1] == (
        f"Execution {execution.pk} completed: 6 target(s), 6 succeeded, 0 failed, 0 skipped, 0 cancelled."
    )


def test_wait_with_json_exits_1_when_a_target_failed(small_fleet, sets_dir, queue):
    v2 = sets_dir / "tenant" / "V2__create_projects.sql"
    v2.write_text(v2.read_text() + "\nSELECT no_such_column FROM no_such_table;\n")
    out = StringIO()
    with ThreadWorker(), pytest.raises(CommandError) as failed:
        call_command(
            "run_migrations",
            "--scope",
            "tenant",
            "--region",
            "us-east",
            "--wait",
            "--json",
            "--poll",
            "0.05",
            stdout=out,
        )
    assert failed.value.returncode == 1
    data = json.loads(out.getvalue())  # --json prints no progress lines, only the summary
    assert data["status"] == "failed"
    assert data["progress"]["failed"] == 3
    assert str(failed.value) == f"Execution {data['id']} failed."


def test_with_json_the_progress_follower_reads_nothing(db, django_assert_num_queries):
    # Nothing to print, so nothing to read: not even the keys of the runs ended so far.
    execution = MigrationExecution.objects.create(scope="tenant", executed_by="t", targets_total=10)
    quiet = _Follower(StringIO(), quiet=True)
    with django_assert_num_queries(0):
        quiet.step(execution)
        quiet.step(execution)
        quiet.close()


def _follow(follower: _Follower, execution: MigrationExecution) -> list:
    """One poll of ``follower``; return the parameters of each query it made."""
    sent: list = []

    def record(execute, sql, params, many, context):
        sent.append(list(params or ()))
        return execute(sql, params, many, context)

    with django_connections["default"].execute_wrapper(record):
        follower.step(execution)
    return sent


def test_the_progress_follower_reports_each_run_once_as_it_ends_and_sends_few_keys(registered):
    at = timezone.now()
    execution = MigrationExecution.objects.create(scope="tenant", executed_by="t", targets_total=60, started_at=at)
    connection = registered["listed-eu"]
    runs = [
        TargetRun.objects.create(
            execution=execution, connection=connection, schema_name=f"tenant_{n:02d}", database_type="tenant"
        )
        for n in range(60)
    ]
    planned = runs[1::10]  # up to date at planning time: ended at the execution's start, never reported
    TargetRun.objects.filter(pk__in=[r.pk for r in planned]).update(status=TargetStatus.SUCCEEDED, completed_at=at)
    out = StringIO()
    follower = _Follower(OutputWrapper(out), quiet=False)

    def end(selected, status=TargetStatus.SUCCEEDED):
        ending = TargetRun.objects.filter(pk__in=[r.pk for r in selected if r not in planned])
        now = timezone.now()
        ran = status in (TargetStatus.SUCCEEDED, TargetStatus.FAILED)  # skipped and cancelled runs never started
        ending.update(status=status, completed_at=now, started_at=now if ran else None)

    end(runs[:20])  # in key order, but for runs[3] (still running) ...
    TargetRun.objects.filter(pk=runs[3].pk).update(status=TargetStatus.RUNNING, completed_at=None)
    end(runs[40:45], TargetStatus.FAILED)  # ... and a few far ahead
    first = _follow(follower, execution)
    end(runs[20:40], TargetStatus.SKIPPED)
    end([runs[3]])
    second = _follow(follower, execution)
    end(runs[45:], TargetStatus.CANCELLED)
    third = _follow(follower, execution)
    fourth = _follow(follower, execution)
    follower.close()

    lines = out.getvalue().splitlines()
    ran = [r for r in runs if r not in planned]
    assert len(lines) == len(ran) == 54
    assert [line.split()[0] for line in lines] == [f"{n}/54" for n in range(1, 55)]
    assert sorted(line.split()[2] for line in lines) == sorted(f"listed-eu/{r.schema_name}" for r in ran)
    # The first poll reported the 17 runs ended of the first 20 and the 4 far ahead; tenant_03 then came first.
    assert lines[21].endswith(" succeeded listed-eu/tenant_03")
    statuses = {line.split()[2]: line.split()[1] for line in lines}
    assert statuses["listed-eu/tenant_40"] == "failed"
    assert statuses["listed-eu/tenant_59"] == "cancelled"
    # What a poll sends: the runs reported above the frontier only (while tenant_03 ran, the 20 that ended after
    # it), never all it has seen (60 keys by the last poll); once nothing is left behind, a handful of values.
    assert max(len(params) for poll in (first, second) for params in poll) <= 30
    assert max(len(params) for poll in (third, fourth) for params in poll) <= 10
    assert fourth  # it still looks
    assert len(out.getvalue().splitlines()) == 54  # a poll with nothing new reports nothing


def test_the_report_says_why_targets_were_skipped(small_fleet, sets_dir):
    shared_v2 = sets_dir / "shared" / "V2__create_countries.sql"
    shared_v2.write_text(shared_v2.read_text() + "\nSELECT no_such_column FROM no_such_table;\n")
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("run_migrations", "--scope", "all", "--region", "us-east", "--sync", stdout=out)
    assert failed.value.returncode == 1
    text = out.getvalue()
    for tenant in small_fleet.tenants_in("us-east"):
        assert re.search(
            rf"shared-us/{tenant.schema_name} +skipped .*\n    skipped: dependency shared-us/public failed", text
        ), text
    assert re.search(r"\d+ succeeded, 1 failed, 3 skipped, 0 cancelled\.$", text.strip())
