"""One set of execution options for every interface: each option reaches the recorded execution (or schedule)
from the admin's Run form, the API, ``run_migrations`` and schedules, and each interface refuses an out-of-bounds
value with the message of ``ExecutionOptions``, recording nothing."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from connections.models import Tenant
from infra_site import roles
from migrations_runner import services, tasks
from migrations_runner.exceptions import InvalidOptions
from migrations_runner.models import ExecutionStatus, MigrationExecution, MigrationSchedule, Origin, TargetStatus
from migrations_runner.options import ExecutionOptions, WaveOptions
from migrations_runner.selection import TargetSelection

PREVIEW = reverse("admin:migrations_runner_migrationexecution_preview")
CONFIRM = reverse("admin:migrations_runner_migrationexecution_confirm")
INTERFACES = ("admin", "api", "command", "schedule")


class Case:
    """An option: how each interface writes a valid and an invalid value, where the valid one is recorded, and
    what refuses the invalid one (``ExecutionOptions``'s message, or the interface's type where a value of the
    wrong type cannot reach it; ``None``: the interface has no such value, a flag or a checkbox)."""

    def __init__(self, name: str, *, valid: dict, recorded, invalid: dict, refusal: dict) -> None:
        # A schedule takes the API's values.
        self.name, self.recorded = name, recorded
        self.valid = {**valid, "schedule": valid["api"]}
        self.invalid = {**invalid, "schedule": invalid.get("api")}
        self.refusal = {"schedule": refusal.get("api"), **refusal}

    def __repr__(self) -> str:
        return self.name


def _options(execution: MigrationExecution, name: str):
    return execution.metadata["options"][name]


CASES = [
    Case(
        "dry_run",
        valid={"admin": "on", "api": True, "command": ["--dry-run"]},
        recorded=lambda e: e.dry_run,
        invalid={"api": "maybe"},
        refusal={"api": "Must be a valid boolean."},
    ),
    Case(
        "on_failure",
        valid={"admin": "halt", "api": "halt", "command": ["--on-failure", "halt"]},
        recorded=lambda e: e.on_failure == "halt",
        invalid={"admin": "panic", "api": "panic", "command": ["--on-failure", "panic"]},
        refusal={"admin": "Select a valid choice.", "api": "is not a valid choice.", "command": "invalid choice"},
    ),
    Case(
        "batch_size",
        valid={"admin": "7", "api": 7, "command": ["--batch-size", "7"]},
        recorded=lambda e: e.batch_size == 7,
        invalid={"admin": "0", "api": 0, "command": ["--batch-size", "0"]},
        refusal=dict.fromkeys(INTERFACES, "must be between 1 and 500."),
    ),
    Case(
        "statement_timeout_s",
        valid={"admin": "120", "api": 120, "command": ["--statement-timeout", "120"]},
        recorded=lambda e: _options(e, "statement_timeout_s") == 120,
        invalid={"admin": "0", "api": 0, "command": ["--statement-timeout", "0"]},
        refusal=dict.fromkeys(INTERFACES, "must be between 1 and 86400 seconds."),
    ),
    Case(
        "lock_timeout_s",
        valid={"admin": "2.5", "api": 2.5, "command": ["--lock-timeout", "2.5"]},
        recorded=lambda e: _options(e, "lock_timeout_s") == 2.5,
        invalid={"admin": "0.01", "api": 0.01, "command": ["--lock-timeout", "0.01"]},
        refusal=dict.fromkeys(INTERFACES, "must be between 0.1 and 3600 seconds."),
    ),
    Case(
        "out_of_order",
        valid={"admin": "on", "api": True, "command": ["--out-of-order"]},
        recorded=lambda e: _options(e, "out_of_order") is True,
        invalid={"api": "maybe"},
        refusal={"api": "Must be a valid boolean."},
    ),
    Case(
        "waves",
        valid={"admin": "1", "api": ["1"], "command": ["--waves", "1"]},
        recorded=lambda e: [(w["wave"], w["size"]) for w in e.waves] == [(1, 1)],
        invalid={"admin": "0", "api": ["0"], "command": ["--waves", "0"]},
        refusal=dict.fromkeys(INTERFACES, "A wave holds at least one target."),
    ),
]


def _admin(client, make_user, name: str, value) -> tuple[MigrationExecution | None, str]:
    client.force_login(make_user(roles.MIGRATIONS_EXECUTE))
    data = {
        "scope": "tenant",
        "tenants": [Tenant.objects.get(slug="acme").pk],
        "on_failure": "continue",
        "batch_size": "4",
        name: value,
    }
    preview = client.get(PREVIEW, data)
    html = preview.content.decode()
    if preview.status_code != 200:
        return None, html
    fields: dict[str, list[str]] = {}
    for field, text in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html):
        fields.setdefault(field, []).append(text)
    assert client.post(CONFIRM, fields).status_code == 302
    return MigrationExecution.objects.get(), ""


def _api(api_as, name: str, value) -> tuple[MigrationExecution | None, str]:
    client = api_as(roles.MIGRATIONS_EXECUTE)
    response = client.post(
        "/api/v1/migrations/execute/", {"scope": "tenant", "tenants": ["acme"], name: value}, format="json"
    )
    if response.status_code == 400:
        return None, " ".join(response.json()["details"][name])
    assert response.status_code == 202, response.content
    execution = MigrationExecution.objects.get()
    assert execution.origin == Origin.API
    return execution, ""


def _command(args: list[str]) -> tuple[MigrationExecution | None, str]:
    try:
        call_command("run_migrations", "--scope", "tenant", "--tenant", "acme", *args, stdout=StringIO())
    except CommandError as exc:
        # A dry run exits 1 as its target (registered, not reachable) fails: it was recorded all the same.
        return MigrationExecution.objects.first(), str(exc)
    return MigrationExecution.objects.get(), ""


def _schedule(api_as, name: str, value) -> tuple[MigrationExecution | None, str]:
    client = api_as(roles.MIGRATIONS_MANAGE)
    body = {
        "name": "nightly-acme",
        "scope": "tenant",
        "filters": {"tenants": ["acme"]},
        "cron_expression": "0 3 * * *",
        name: value,
    }
    response = client.post("/api/v1/schedules/", body, format="json")
    if response.status_code == 400:
        assert not MigrationSchedule.objects.exists()
        return None, " ".join(response.json()["details"][name])
    assert response.status_code == 201, response.content
    assert client.get(f"/api/v1/schedules/{response.json()['id']}/").json()[name] == value
    return MigrationExecution.objects.get(pk=tasks.fire_schedule(response.json()["id"])), ""


@pytest.fixture
def start(registered, settings, client, make_user, api_as):
    """Start a run over tenant acme through an interface; return the execution recorded, or None and the
    refusal. No worker runs the queued lanes: what is recorded is what the interface asked for."""
    settings.MIGRATION_EXECUTOR = "queue"

    def through(interface: str, name: str, value) -> tuple[MigrationExecution | None, str]:
        if interface == "admin":
            return _admin(client, make_user, name, value)
        if interface == "api":
            return _api(api_as, name, value)
        if interface == "command":
            return _command(value)
        return _schedule(api_as, name, value)

    return through


@pytest.mark.django_db
@pytest.mark.parametrize("interface", INTERFACES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_each_interface_records_a_valid_option_and_refuses_an_invalid_one_with_the_services_message(
    start, case, interface
):
    execution, refusal = start(interface, case.name, case.valid[interface])
    assert execution is not None, refusal
    assert case.recorded(execution), (case.name, execution.metadata["options"])
    execution.delete()
    MigrationSchedule.objects.all().delete()
    if case.invalid.get(interface) is None:
        return  # a flag or a checkbox: nothing out of bounds can be given
    execution, refusal = start(interface, case.name, case.invalid[interface])
    assert execution is None
    assert case.refusal[interface] in refusal, refusal
    assert not MigrationExecution.objects.exists()
    assert not MigrationSchedule.objects.exists()


@pytest.mark.django_db
def test_execution_start_itself_refuses_a_batch_size_out_of_bounds(registered):
    valid = ExecutionOptions(batch_size=500).validate()
    assert valid.batch_size == 500
    with pytest.raises(InvalidOptions) as refused:
        services.execution_start(
            selection=TargetSelection(scope="tenant", tenants=["acme"]),
            options=ExecutionOptions(batch_size=0),
            actor="t",
            origin=Origin.API,
        )
    assert refused.value.details == {"batch_size": ["batch_size must be between 1 and 500."]}
    assert not MigrationExecution.objects.exists()


def test_the_options_round_trip_through_their_stored_form():
    options = ExecutionOptions(
        dry_run=True,
        on_failure="halt",
        batch_size=3,
        statement_timeout_s=60,
        lock_timeout_s=0.5,
        out_of_order=True,
        waves=WaveOptions.parse(waves=["1", "10%"], failure_budget="5%", pause_s=30, approval=True, canary=["acme"]),
    )
    assert ExecutionOptions.from_dict(options.as_dict()) == options
    assert ExecutionOptions.from_dict({}) == ExecutionOptions()
    assert ExecutionOptions.from_dict(ExecutionOptions().as_dict()) == ExecutionOptions()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_schedule_with_waves_fires_an_execution_that_runs_in_waves(small_fleet, settings):
    settings.MIGRATION_EXECUTOR = "inline"
    schedule = services.schedule_create(
        actor="test",
        name="tenants-in-waves",
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(batch_size=6, waves=WaveOptions.parse(waves=["2"])),
        cron_expression="0 3 * * *",
    )
    execution = MigrationExecution.objects.get(pk=tasks.fire_schedule(schedule.pk))
    assert execution.status == ExecutionStatus.COMPLETED
    assert [(w["wave"], w["size"]) for w in execution.waves] == [(1, 2), (2, 4)]
    runs: dict[int, list] = {}
    for run in execution.targets.order_by("id"):
        runs.setdefault(run.wave, []).append(run)
    assert {wave: len(group) for wave, group in runs.items()} == {1: 2, 2: 4}
    assert {r.phase for r in runs[2]} == {next(iter({r.phase for r in runs[1]})) + 1}
    assert max(r.completed_at for r in runs[1]) <= min(r.started_at for r in runs[2])
    assert {r.status for group in runs.values() for r in group} == {TargetStatus.SUCCEEDED}
