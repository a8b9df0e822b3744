"""The rollback_execution command: an execution or one target, its arguments, its output and exit status."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from migrations_runner import services
from migrations_runner.models import ExecutionKind, ExecutionStatus, MigrationExecution, Origin, Scope
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def rollback(*args: str) -> str:
    out = StringIO()
    call_command("rollback_execution", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def migrated_us000(small_fleet):
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.COMPLETED
    return execution


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["00000000-0000-0000-0000-000000000000", "--schema", "tenant_us000"],
    ],
    ids=["nothing", "an-id-and-a-target"],
)
def test_an_execution_id_or_a_target_is_required_but_not_both(db, args):
    with pytest.raises(CommandError, match=r"Give an execution id, or --connection, --schema and --to-version"):
        rollback(*args)


def test_a_target_needs_all_three_options(db):
    with pytest.raises(CommandError, match=r"--connection, --schema and --to-version go together\."):
        rollback("--connection", "shared-us", "--schema", "tenant_us000")
    assert not MigrationExecution.objects.exists()


def test_one_target_rolls_back_to_a_version_and_prints_json(small_fleet, migrated_us000):
    data = json.loads(rollback("--connection", "shared-us", "--schema", "tenant_us000", "--to-version", "6", "--json"))
    assert data["status"] == "completed"
    assert [t["target"] for t in data["targets"]] == ["shared-us/tenant_us000"]
    assert data["targets"][0]["applied"] == ["9", "8", "7"]
    assert small_fleet.applied("shared-us", "tenant_us000") == ["1", "2", "3", "4", "5", "6"]
    rollback_run = MigrationExecution.objects.get(pk=data["id"])
    assert rollback_run.kind == ExecutionKind.ROLLBACK
    assert rollback_run.scope == Scope.SINGLE
    assert rollback_run.origin == Origin.COMMAND
    assert rollback_run.filters["to_version"] == "6"


def test_to_version_0_undoes_everything_and_the_text_output_lists_what_was_undone(small_fleet, migrated_us000):
    out = rollback("--connection", "shared-us", "--schema", "tenant_us000", "--to-version", "0")
    lines = out.strip().splitlines()
    assert lines[0].startswith("shared-us/tenant_us000")
    assert lines[0].endswith("undone: 9, 8, 7, 6, 5, 4, 3, 2, 1")
    assert lines[-1].startswith("Rollback ")
    assert lines[-1].endswith(" completed.")
    assert small_fleet.applied("shared-us", "tenant_us000") == []


def test_a_target_already_at_the_version_is_refused(small_fleet, migrated_us000):
    with pytest.raises(CommandError, match="already at or below version 9"):
        rollback("--connection", "shared-us", "--schema", "tenant_us000", "--to-version", "9")
    assert MigrationExecution.objects.count() == 1


def test_a_schema_that_is_not_a_target_is_refused(small_fleet):
    with pytest.raises(CommandError, match="shared-us/nobody is not a migration target"):
        rollback("--connection", "shared-us", "--schema", "nobody", "--to-version", "1")


def test_an_unknown_execution_is_a_clear_error(db):
    with pytest.raises(CommandError) as raised:
        rollback("00000000-0000-0000-0000-000000000000")
    assert "00000000-0000-0000-0000-000000000000" in str(raised.value)


def test_a_refused_rollback_lists_the_missing_undo_scripts(small_fleet, sets_dir, migrated_us000):
    (sets_dir / "tenant" / "U8__add_tasks_estimate_points.sql").unlink()
    with pytest.raises(CommandError) as refused:
        rollback(str(migrated_us000.pk))
    assert "missing_undo_scripts: " in str(refused.value)
    assert "tenant/U8__" in str(refused.value)
    assert small_fleet.applied("shared-us", "tenant_us000") == [str(v) for v in range(1, 10)]


def test_a_failing_undo_script_exits_1_and_the_json_says_failed(small_fleet, sets_dir, migrated_us000):
    undo = sets_dir / "tenant" / "U7__invoice_total_trigger.sql"
    undo.write_text("SELECT no_such_column FROM no_such_table;\n")
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("rollback_execution", str(migrated_us000.pk), "--json", stdout=out)
    assert failed.value.returncode == 1
    data = json.loads(out.getvalue())
    assert data["status"] == "failed"
    assert str(failed.value) == f"Rollback {data['id']} failed."
    target = data["targets"][0]
    assert target["status"] == "failed"
    assert target["applied"] == ["9", "8"]  # undone before the broken undo script of version 7
    assert target["error"]["sqlstate"] == "42P01"
    assert small_fleet.applied("shared-us", "tenant_us000") == [str(v) for v in range(1, 8)]
