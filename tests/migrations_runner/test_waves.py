"""Canary waves: sizes, the canary rule, the failure budget that halts, the soak time and the approval gate."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import OrmQ, Task
from django_q.tasks import async_task
from psycopg import sql
from rest_framework.test import APIClient

from infra_site import roles
from migrations_runner import selectors, services
from migrations_runner.exceptions import InvalidWaves, NotAwaitingApproval
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus, Waiting
from migrations_runner.options import ExecutionOptions, Size, WaveOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.services.schedules import RECOVERY_TASK
from migrations_runner.services.waves import budget_exceeded, wave_sizes
from tests.support.fleet import build_fleet, create_owned_table, drop_fleet
from tests.support.waiting import wait_finished, wait_until

TENANTS = TargetSelection(scope="tenant")


def waves_of(execution: MigrationExecution) -> dict[int, list[TargetRun]]:
    runs: dict[int, list[TargetRun]] = {}
    for run in execution.targets.select_related("connection").order_by("id"):
        runs.setdefault(run.wave, []).append(run)
    return runs


# --- the rules, without a database ---


@pytest.mark.parametrize(
    ("sizes", "total", "canaries", "expected"),
    [
        (["1", "10", "100"], 500, 0, [1, 10, 100, 389]),
        (["1%", "10%", "50%"], 200, 0, [2, 20, 100, 78]),
        (["1%"], 50, 0, [1, 49]),  # a percentage rounds up: a wave holds at least one
        (["10", "100"], 30, 0, [10, 20]),  # sizes beyond the targets: the last wave is what is left
        (["5"], 5, 0, [5]),
        (["2"], 10, 3, [3, 2, 5]),  # the canary list is a wave of its own
        ([], 10, 2, [2, 8]),
    ],
)
def test_wave_sizes(sizes, total, canaries, expected):
    options = WaveOptions.parse(waves=sizes, canary=[f"t{n}" for n in range(canaries)])
    assert wave_sizes(options, total, canaries) == expected
    assert sum(expected) == total


def test_the_budget_is_a_count_or_a_percentage_of_the_wave():
    assert not budget_exceeded(Size.parse("0", field_name="b"), failed=0, size=10)
    assert budget_exceeded(Size.parse("0", field_name="b"), failed=1, size=10)
    assert not budget_exceeded(Size.parse("2", field_name="b"), failed=2, size=10)
    assert not budget_exceeded(Size.parse("10%", field_name="b"), failed=1, size=10)
    assert budget_exceeded(Size.parse("10%", field_name="b"), failed=2, size=10)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"waves": ["ten"]}, "waves"),
        ({"waves": ["150%"]}, "waves"),
        ({"waves": ["0"]}, "waves"),
        ({"waves": ["1.5"]}, "waves"),
        ({"waves": ["1"], "failure_budget": "-1"}, "failure_budget"),
        ({"waves": ["1"], "pause_s": -1}, "wave_pause"),
        ({"waves": ["1"], "canary": ["Not A Slug"]}, "canary"),
        ({"failure_budget": "1"}, "waves"),  # wave options without waves
        ({"approval": True}, "waves"),
    ],
)
def test_invalid_wave_options_name_the_field(options, field):
    with pytest.raises(InvalidWaves) as refused:
        WaveOptions.parse(**options)
    assert field in refused.value.details


# --- runs on the test PostgreSQL ---


@pytest.fixture
def fifty(pg_server, sets_dir, db):
    built = build_fleet(pg_server, tenants_per_region=25)
    yield built
    drop_fleet(built)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_wave_over_its_budget_halts_the_execution_and_skips_the_rest(fifty):
    # Smallest schemas first, ties by label: every schema is empty, so wave 2 is eu005..eu014.
    victim = next(t for t in fifty.tenants if t.slug == "eu007")
    with fifty.connect("shared-eu") as conn:
        create_owned_table(conn, victim.schema_name, "projects")  # V2 create_projects fails there
    execution = services.execution_start(
        selection=TENANTS,
        options=ExecutionOptions(batch_size=3, waves=WaveOptions.parse(waves=["5", "10"], failure_budget="0")),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.FAILED
    runs = waves_of(execution)
    assert [len(runs[w]) for w in (1, 2, 3)] == [5, 10, 35]
    assert [r.tenant.slug for r in runs[1]] == ["eu000", "eu001", "eu002", "eu003", "eu004"]
    assert all(r.status == TargetStatus.SUCCEEDED for r in runs[1])
    failed = [r for r in runs[2] if r.status == TargetStatus.FAILED]
    assert [r.tenant.slug for r in failed] == ["eu007"]
    reason = f"halted: wave 2 exceeded its failure budget (1 of 10 failed, budget 0): shared-eu/{victim.schema_name}"
    assert execution.error.startswith(reason)
    for run in runs[3]:
        assert (run.status, run.skip_reason, run.started_at) == (TargetStatus.SKIPPED, reason, None)
    # Wave 2 stopped where it was: nothing in it started after the failure was recorded.
    assert all(r.status in (TargetStatus.SUCCEEDED, TargetStatus.FAILED, TargetStatus.SKIPPED) for r in runs[2])
    states = {w.wave: w.state for w in selectors.execution_waves(execution=execution)}
    assert states == {1: "done", 2: "halted", 3: "skipped"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_first_wave_holds_the_smallest_schemas_or_the_canary_list(small_fleet):
    # A tenant with data is the largest: it goes last; an explicit canary list goes first whatever its size.
    big = small_fleet.tenants[0]
    with small_fleet.connect("shared-us") as conn:
        schema = sql.Identifier(big.schema_name)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        conn.execute(sql.SQL("CREATE TABLE {}.filler AS SELECT g FROM generate_series(1, 20000) g").format(schema))
    plan = services.execution_start(
        selection=TENANTS,
        options=ExecutionOptions(dry_run=True, waves=WaveOptions.parse(waves=["5"])),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    runs = waves_of(plan)
    assert [r.tenant.slug for r in runs[2]] == [big.slug]
    plan = services.execution_start(
        selection=TENANTS,
        options=ExecutionOptions(dry_run=True, waves=WaveOptions.parse(waves=["1"], canary=[big.slug])),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    runs = waves_of(plan)
    assert [r.tenant.slug for r in runs[1]] == [big.slug]
    assert [len(runs[w]) for w in (1, 2, 3)] == [1, 1, 4]
    assert [w["size"] for w in plan.waves] == [1, 1, 4]
    with pytest.raises(InvalidWaves) as refused:
        services.execution_start(
            selection=TENANTS,
            options=ExecutionOptions(waves=WaveOptions.parse(waves=["1"], canary=["nobody"])),
            actor="t",
            origin=Origin.API,
            wait=True,
        )
    assert "canary" in refused.value.details


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_next_wave_waits_out_the_soak_time(small_fleet):
    execution = services.execution_start(
        selection=TENANTS,
        options=ExecutionOptions(batch_size=6, waves=WaveOptions.parse(waves=["2"], pause_s=2)),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.COMPLETED
    runs = waves_of(execution)
    first_done = max(r.completed_at for r in runs[1])
    second_started = min(r.started_at for r in runs[2])
    assert (second_started - first_done).total_seconds() >= 2
    soak = execution.waves[1]
    assert soak["opened_at"] >= soak["soak_until"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_approval_gates_each_wave_and_abort_cancels_the_rest(small_fleet, api_as, make_user):
    execution = services.execution_start(
        selection=TENANTS,
        options=ExecutionOptions(waves=WaveOptions.parse(waves=["2", "2"], approval=True)),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert (execution.status, execution.waiting) == (ExecutionStatus.IN_PROGRESS, Waiting.APPROVAL)
    progress = selectors.execution_progress(execution=execution)
    assert (progress.state, progress.completed, progress.pending) == ("awaiting_approval", 2, 4)
    assert not progress.no_worker
    reader = api_as(roles.MIGRATIONS_READ)
    url = f"/api/v1/migrations/{execution.pk}/continue/"
    assert reader.post(url).status_code == 403
    status = reader.get(f"/api/v1/migrations/status/{execution.pk}/").json()
    assert [w["state"] for w in status["waves"]] == ["done", "awaiting_approval", "pending"]
    operator, person = APIClient(), make_user(roles.MIGRATIONS_EXECUTE)
    operator.force_login(person)
    response = operator.post(url)
    assert response.status_code == 202
    body = response.json()
    assert [w["state"] for w in body["waves"]] == ["done", "done", "awaiting_approval"]
    assert body["waves"][1]["approved_by"] == person.username
    response = operator.post(f"/api/v1/migrations/{execution.pk}/abort/")
    assert response.status_code == 200
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.CANCELLED
    assert execution.error.startswith("aborted before wave 3 by ")
    assert {r.status for r in waves_of(execution)[3]} == {TargetStatus.CANCELLED}
    again = operator.post(url)
    assert again.status_code == 409
    assert again.json()["error"] == "not_awaiting_approval"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_commands_run_waves_abort_and_continue_them(small_fleet, capsys):
    with pytest.raises(CommandError, match="waves"):
        call_command("run_migrations", "--scope", "tenant", "--sync", "--failure-budget", "1")
    waves = ("run_migrations", "--scope", "tenant", "--sync", "--waves", "50%", "--wave-approval")
    call_command(*waves)
    first = MigrationExecution.objects.get()
    assert "awaiting approval before wave 2" in capsys.readouterr().out
    call_command("continue_execution", str(first.pk), "--abort", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == ExecutionStatus.CANCELLED
    assert [(w["wave"], w["state"], w["cancelled"]) for w in report["waves"]] == [(1, "done", 0), (2, "skipped", 3)]
    call_command(*waves)  # the 3 tenants the first run did not reach: 2, then 1
    second = MigrationExecution.objects.exclude(pk=first.pk).get()
    assert [w["size"] for w in second.waves] == [2, 1]
    capsys.readouterr()
    call_command("continue_execution", str(second.pk))
    second.refresh_from_db()
    assert second.status == ExecutionStatus.COMPLETED
    assert "wave  2 done" in capsys.readouterr().out
    with pytest.raises(CommandError, match="not awaiting approval"):
        call_command("continue_execution", str(second.pk))
    with pytest.raises(NotAwaitingApproval):
        services.execution_abort(execution=second, actor="t")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_approval_wait_survives_a_qcluster_restart(small_fleet, queue_settings, clusters, api_as):
    (first,) = clusters(workers=2)
    execution = services.execution_start(
        selection=TENANTS,
        options=ExecutionOptions(waves=WaveOptions.parse(waves=["2"], approval=True)),
        actor="t",
        origin=Origin.API,
    )

    def awaiting_approval() -> bool:
        execution.refresh_from_db()
        return execution.waiting == Waiting.APPROVAL

    wait_until(awaiting_approval, timeout=60, interval=0.2, message=lambda: first.output()[-3000:])
    first.stop()
    (second,) = clusters(workers=2)
    # "It keeps waiting" means something only once the new cluster is at work: it has run the lost-target
    # recovery (its result kept) and taken whatever that queued (rows the stopped cluster held stay locked).
    recovery = async_task(RECOVERY_TASK, save=True)
    wait_until(
        lambda: (
            Task.objects.filter(id=recovery).exists() and not OrmQ.objects.filter(lock__lte=timezone.now()).exists()
        ),
        timeout=60,
        interval=0.2,
        message=lambda: f"the new cluster did not run the recovery:\n{second.output()[-3000:]}",
    )
    execution.refresh_from_db()
    assert (execution.status, execution.waiting, execution.targets_succeeded) == ("in_progress", "approval", 2)
    assert not execution.targets.filter(wave=2).exclude(status=TargetStatus.PENDING).exists()
    approved_at = timezone.now()
    response = api_as(roles.MIGRATIONS_EXECUTE).post(f"/api/v1/migrations/{execution.pk}/continue/")
    assert response.status_code == 202
    execution = wait_finished(execution)
    assert execution.status == ExecutionStatus.COMPLETED
    assert all(r.started_at >= approved_at for r in execution.targets.filter(wave=2))
