"""The migration commands: run_migrations, rollback_execution, fleet_status, check_migration_sets."""

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from migrations_runner.models import MigrationExecution
from tests.support.fleet import create_owned_table

pytestmark = pytest.mark.postgres


def run(*args):
    """Run a command and return its exit status and output; errors other than a failed execution propagate."""
    out, err = StringIO(), StringIO()
    code = 0
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:
        if not str(exc).startswith("Execution "):
            raise
        code = exc.returncode
    return code, out.getvalue(), err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_run_migrations_json_parses_and_exits_0_when_all_succeed(small_fleet):
    code, out, _ = run("run_migrations", "--scope", "all", "--sync", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "completed"
    assert data["progress"]["total"] == 10
    assert data["progress"]["completion_percentage"] == 100.0


@pytest.mark.django_db(transaction=True)
def test_run_migrations_exits_1_when_a_target_failed(small_fleet, sets_dir):
    victim = small_fleet.tenants[0]
    with small_fleet.connect("shared-us") as conn:
        create_owned_table(conn, victim.schema_name, "projects")
    code, out, _ = run("run_migrations", "--scope", "tenant", "--sync", "--json")
    assert code == 1
    data = json.loads(out)
    failed = [t for t in data["targets"] if t["status"] == "failed"]
    assert [t["target"] for t in failed] == [f"shared-us/{victim.schema_name}"]
    assert failed[0]["error"]["sqlstate"] == "42P07"
    code, out, _ = run("run_migrations", "--scope", "tenant", "--sync")
    assert code == 1
    assert "SQLSTATE 42P07" in out
    assert "statement:" in out


@pytest.mark.django_db(transaction=True)
def test_the_report_counts_the_targets_that_were_up_to_date_and_lists_the_others(small_fleet, sets_dir):
    assert run("run_migrations", "--scope", "tenant", "--sync")[0] == 0
    (sets_dir / "tenant" / "V90__late.sql").write_text("CREATE TABLE late (x int);\n")
    first, second = small_fleet.tenants_in("us-east")[:2]
    with small_fleet.connect("shared-us") as conn:
        conn.execute(f"CREATE TABLE {first.schema_name}.late (y int)")  # V90 fails there

    code, out, _ = run("run_migrations", "--scope", "tenant", "--tenant", first.slug, "--tenant", second.slug, "--sync")

    assert code == 1
    assert re.search(rf"shared-us/{first.schema_name} +failed", out)
    assert re.search(rf"shared-us/{second.schema_name} +succeeded .*-> 90", out)
    assert "already up to date" not in out

    code, out, _ = run("run_migrations", "--scope", "tenant", "--tenant", second.slug, "--sync")
    lines = out.strip().splitlines()
    assert code == 0
    assert lines[0] == "1 target(s) already up to date (-v 2 lists them)."
    assert lines[-1].endswith("1 target(s), 1 succeeded, 0 failed, 0 skipped, 0 cancelled.")
    assert second.schema_name not in out

    code, out, _ = run("run_migrations", "--scope", "tenant", "--tenant", second.slug, "--sync", "--verbosity", "2")
    assert re.search(rf"shared-us/{second.schema_name} +succeeded +90 -> 90", out)
    assert "already up to date" not in out


@pytest.mark.django_db(transaction=True)
def test_dry_run_command_lists_pending_versions(small_fleet):
    code, out, _ = run("run_migrations", "--scope", "tenant", "--tenant", "us000", "--dry-run")
    assert code == 0
    assert re.search(r"shared-us/tenant_us000 .* pending: 1, 2, 3", out)


@pytest.mark.django_db(transaction=True)
def test_unknown_tenant_is_a_clear_error(small_fleet):
    with pytest.raises(CommandError, match="No target matches"):
        run("run_migrations", "--scope", "tenant", "--tenant", "nobody")


@pytest.mark.django_db(transaction=True)
def test_fleet_status_and_rollback_execution(small_fleet):
    code, out, _ = run("fleet_status", "--json")
    assert code == 0
    assert all(row["pending"] for row in json.loads(out))
    run("run_migrations", "--scope", "tenant", "--sync", "--json")
    code, out, _ = run("fleet_status", "--json")
    tenants = [row for row in json.loads(out) if row["database_type"] == "tenant"]
    assert all(not row["pending"] and not row["drift"] for row in tenants)
    execution = MigrationExecution.objects.get()
    code, out, _ = run("rollback_execution", str(execution.pk))
    assert code == 0, out
    assert "completed" in out
    code, out, _ = run("fleet_status", "--connection", "shared-us")
    assert "behind" in out


def test_check_migration_sets_passes_on_the_shipped_sets():
    out = StringIO()
    call_command("check_migration_sets", stdout=out)
    assert "All migration sets are valid." in out.getvalue()


def test_check_migration_sets_fails_listing_the_file(tmp_path):
    (tmp_path / "tenant").mkdir()
    (tmp_path / "tenant" / "V1__ok.sql").write_text("SELECT 1;")
    (tmp_path / "tenant" / "V2_bad.sql").write_text("SELECT 1;")
    (tmp_path / "tenant" / "V3__ph.sql").write_text("SELECT '${nope}';")
    with pytest.raises(CommandError) as raised:
        call_command("check_migration_sets", "--dir", str(tmp_path), stdout=StringIO())
    assert "tenant/V2_bad.sql: malformed file name" in str(raised.value)
    assert "tenant/V3__ph.sql: unknown placeholder(s) ${nope}" in str(raised.value)


def test_commands_raise_command_error_and_import_no_other_command():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "migrations_runner" / "management" / "commands"
    for command in folder.glob("*.py"):
        text = command.read_text()
        assert "sys.exit" not in text, command.name
        assert "management.commands" not in text, command.name


@pytest.mark.django_db(transaction=True)
def test_fleet_status_exits_1_with_the_reason_when_a_target_drifted(small_fleet, sets_dir):
    run("run_migrations", "--scope", "tenant", "--tenant", "us000", "--sync", "--json")
    script = sorted((sets_dir / "tenant").glob("V1__*.sql"))[0]
    script.write_text(script.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(CommandError) as raised:
        call_command("fleet_status", "--connection", "shared-us", stdout=StringIO())
    assert raised.value.returncode == 1
    assert "drift" in str(raised.value)
