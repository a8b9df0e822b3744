"""Adopting Flyway-managed targets and baselines: a real ``flyway_schema_history`` written as Flyway writes it (on
the shipped tenant set and on a third-party Flyway folder), drift, idempotence, and baselines through the command,
the API and the admin, with the engine honouring them (pending versions, rollback). Flyway's checksum and the
adoption plan on their own are tested with the engine, in tests/engine/test_flyway.py."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from io import StringIO

import psycopg
import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import CommandError, call_command
from django.urls import reverse
from psycopg import sql

from connections.models import Tenant
from infra_site import roles
from infra_site.cli import cli_actor
from migrations_runner import services
from migrations_runner.engine import flyway
from migrations_runner.engine.apply import LOCK_NAMESPACE
from migrations_runner.engine.sets import Script, Version, load_set
from migrations_runner.exceptions import RollbackRefused
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.postgres import REGISTRY_USER
from tests.support.sets import FLYWAY_DDL, THIRD_PARTY

ADOPT_URL = "/api/v1/migrations/adopt/"
BASELINE_URL = "/api/v1/migrations/baseline/"


# --- a Flyway history table on a real database ---------------------------------------------------------------------


@dataclass
class FlywayHistory:
    """Runs scripts on a schema and records them in its ``flyway_schema_history`` as Flyway does, as the fleet's
    owner role."""

    conn: psycopg.Connection
    schema: str
    context: dict
    rank: int = 0

    @classmethod
    def start(cls, conn: psycopg.Connection, schema: str, context: dict, *, create_schema: bool) -> FlywayHistory:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(REGISTRY_USER)))
        history = cls(conn, schema, context)
        if create_schema:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(FLYWAY_DDL).format(table=history.table))
        if create_schema:
            history.row(None, "<< Flyway Schema Creation >>", "SCHEMA", f'"{schema}"', None)
        return history

    @property
    def table(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(flyway.TABLE))

    def row(self, version, description, kind, script, checksum, *, success=True) -> None:
        self.rank += 1
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {} (installed_rank, version, description, type, script, checksum, installed_by, "
                "execution_time, success) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table),
            [self.rank, version, description, kind, script, checksum, "deploy_bot", 12, success],
        )

    def migrate(self, script: Script, *, checksum: int | None = None, run: bool = True, success: bool = True) -> None:
        """Run ``script`` (placeholders as our engine renders them) and record it, in one transaction."""
        with self.conn.transaction():
            if run:
                self.conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(self.schema)))
                self.conn.execute(script.render(self.context))
            version = str(script.version) if script.version else None
            checksum = flyway.checksum(script.content) if checksum is None else checksum
            self.row(version, script.description, "SQL", script.filename, checksum, success=success)


def tenant_context(tenant: Tenant) -> dict:
    return {
        "schema": tenant.schema_name,
        "tenant_slug": tenant.slug,
        "region": tenant.connection.region,
        "database_type": "tenant",
    }


def flyway_tenant(conn: psycopg.Connection, tenant: Tenant, scripts: list[Script]) -> FlywayHistory:
    """Migrate a tenant's schema with ``scripts`` the way Flyway does, creating the schema."""
    history = FlywayHistory.start(conn, tenant.schema_name, tenant_context(tenant), create_schema=True)
    for script in scripts:
        history.migrate(script)
    return history


def our_history(conn: psycopg.Connection, schema: str) -> list[tuple]:
    return conn.execute(
        sql.SQL(
            "SELECT type, version, script, installed_by FROM {}.infra_schema_history ORDER BY installed_rank"
        ).format(sql.Identifier(schema))
    ).fetchall()


def has_our_history(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{schema}.infra_schema_history"]).fetchone()[0]


def adopt_command(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("adopt_flyway", *args, stdout=out, stderr=StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_tenants_migrated_by_flyway_to_version_5_get_only_6_and_later_each_once(fleet, sets_dir):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenants = fleet.tenants_in("us-east")
    assert len(tenants) == 20
    with fleet.connect("shared-us") as conn:
        for tenant in tenants:
            flyway_tenant(conn, tenant, [*mset.versions[:5], *mset.repeatables])
    selection = TargetSelection(scope="tenant", regions=["us-east"])

    report = services.flyway_adopt(selection=selection, actor="test")
    assert (report["count"], report["adopted"], report["refused"], report["drifted"]) == (20, 20, 0, 0)
    for target in report["targets"]:
        assert [(r["kind"], r["version"] or r["script"]) for r in target["imported"]] == [
            *(("SQL", str(n)) for n in range(1, 6)),
            ("REPEATABLE", "R__views.sql"),
        ]
        assert target["pending_after"] == ["6", "7", "8", "9"]
        assert target["flyway_version"] == "5"
    again = services.flyway_adopt(selection=selection, actor="test")
    assert {t["status"] for t in again["targets"]} == {"up_to_date"}
    assert all(t["imported"] == [] for t in again["targets"])

    execution = services.execution_start(
        selection=selection, options=ExecutionOptions(batch_size=8), actor="operator", origin=Origin.API, wait=True
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    runs = list(execution.targets.all())
    assert len(runs) == 20
    for run in runs:
        assert run.status == TargetStatus.SUCCEEDED
        assert (run.from_version, run.to_version) == ("5", "9")
        assert [a["version"] for a in run.applied_versions] == ["6", "7", "8", "9"]
    with fleet.connect("shared-us") as conn:
        for tenant in tenants:
            rows = our_history(conn, tenant.schema_name)
            assert [r[1] for r in rows if r[0] == "SQL"] == [str(n) for n in range(1, 10)]
            assert [r[2] for r in rows if r[0] == "REPEATABLE"] == ["R__views.sql"]
            assert {r[1] or r[2]: r[3] for r in rows} == {
                **{str(n): flyway.ADOPTED_BY for n in range(1, 6)},
                "R__views.sql": flyway.ADOPTED_BY,
                **{str(n): "operator" for n in range(6, 10)},
            }
            flyway_rows = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.flyway_schema_history").format(sql.Identifier(tenant.schema_name))
            ).fetchone()[0]
            assert flyway_rows == 7  # Flyway's own history is left as it was


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failed_flyway_row_is_reported_not_imported_and_its_version_runs_once(small_fleet, sets_dir):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenant = small_fleet.tenants_in("us-east")[0]
    with small_fleet.connect("shared-us") as conn:
        history = flyway_tenant(conn, tenant, [*mset.versions[:5], *mset.repeatables])
        for script in mset.versions[5:8]:
            history.migrate(script)
        # V9 builds indexes concurrently (no transaction): Flyway records its failure with success = false.
        history.migrate(mset.versions[8], run=False, success=False)

    report = services.flyway_adopt(selection=TargetSelection(scope="tenant", tenants=[tenant.slug]), actor="test")
    target = report["targets"][0]
    assert target["status"] == "adopted"
    assert [r["version"] for r in target["imported"] if r["kind"] == "SQL"] == [str(n) for n in range(1, 9)]
    assert [(f["version"], f["script"], f["installed_rank"]) for f in target["failed_rows"]] == [
        ("9", "V9__index_due_dates_concurrently.sql", 11)
    ]
    assert [f["type"] for f in target["skipped"]] == ["SCHEMA"]
    assert target["pending_after"] == ["9"]

    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=[tenant.slug]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert [a["version"] for a in execution.targets.get().applied_versions] == ["9"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_schema_migrated_by_a_third_party_flyway_folder_is_adopted(small_fleet, sets_dir):
    # The third-party folder is the analytics set here; the analytics database's public schema was migrated by
    # Flyway with all of it but V4, checksums taken from the files as Flyway reads them (CRLF and all).
    shutil.rmtree(sets_dir / "analytics")
    shutil.copytree(THIRD_PARTY, sets_dir / "analytics")
    mset = load_set(sets_dir / "analytics", "analytics")
    assert mset.problems == []
    assert [str(s.version) for s in mset.versions] == ["1", "1.1", "2", "3", "4"]
    raw = {path.name: path.read_bytes().decode("utf-8") for path in THIRD_PARTY.glob("*.sql")}
    context = {"schema": "public", "tenant_slug": "", "region": "", "database_type": "analytics"}
    with small_fleet.connect("analytics") as conn:
        history = FlywayHistory.start(conn, "public", context, create_schema=False)
        for script in [*mset.versions[:4], *mset.repeatables]:
            history.migrate(script, checksum=flyway.checksum(raw[script.filename]))
    selection = TargetSelection(scope="regional", connections=["analytics"])

    preview = services.flyway_adopt(selection=selection, actor="test", dry_run=True)
    assert preview["dry_run"]
    assert preview["targets"][0]["status"] == "adopted"
    with small_fleet.connect("analytics") as conn:
        assert not has_our_history(conn, "public")  # a dry run writes nothing

    report = services.flyway_adopt(selection=selection, actor="test")
    target = report["targets"][0]
    assert [(r["kind"], r["version"] or r["script"]) for r in target["imported"]] == [
        ("SQL", "1"),
        ("SQL", "1.1"),
        ("SQL", "2"),
        ("SQL", "3"),
        ("REPEATABLE", "R__stock_to_reorder_view.sql"),
    ]
    assert target["drift"] == []
    assert target["pending_after"] == ["4"]

    execution = services.execution_start(
        selection=selection, options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert [a["version"] for a in execution.targets.get().applied_versions] == ["4"]
    with small_fleet.connect("analytics") as conn:
        assert conn.execute("SELECT count(*) FROM public.warehouses").fetchone()[0] == 3
        assert conn.execute("SELECT to_regclass('public.stock_movements') IS NOT NULL").fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_script_changed_after_flyway_applied_it_is_drift_reported_per_script(small_fleet, sets_dir):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenants = small_fleet.tenants_in("us-east")[:2]
    with small_fleet.connect("shared-us") as conn:
        for tenant in tenants:
            history = FlywayHistory.start(conn, tenant.schema_name, tenant_context(tenant), create_schema=True)
            for script in mset.versions[:5]:
                # V2 was checked out with Windows line endings where Flyway ran: not drift.
                text = script.content.replace("\n", "\r\n") if script.version == Version.parse("2") else None
                history.migrate(script, checksum=flyway.checksum(text) if text else None)
    v3 = sets_dir / "tenant" / "V3__create_tasks.sql"
    v3.write_text(v3.read_text() + "-- reviewed after release\n")
    edited = load_set(sets_dir / "tenant", "tenant").by_version()[Version.parse("3")]

    args = ["--scope", "tenant", *(f"--tenant={t.slug}" for t in tenants), "--json"]
    code, out = adopt_command(*args)
    assert code == 1
    report = json.loads(out)
    assert (report["refused"], report["drifted"]) == (2, 2)
    for target in report["targets"]:
        assert target["status"] == "refused"
        assert target["imported"] == []
        assert [(f["version"], f["script"], f["set_checksum"]) for f in target["drift"]] == [
            ("3", "V3__create_tasks.sql", flyway.checksum(edited.content))
        ]
        assert target["drift"][0]["flyway_checksum"] == flyway.checksum(mset.by_version()[Version.parse("3")].content)
        assert "V3__create_tasks.sql was changed after Flyway applied" in target["drift"][0]["reason"]
    with small_fleet.connect("shared-us") as conn:
        assert not any(has_our_history(conn, t.schema_name) for t in tenants)
    code, out = adopt_command("--scope", "tenant", f"--tenant={tenants[0].slug}")
    assert code == 1
    assert "drift: version 3 (rank 4): V3__create_tasks.sql was changed" in out

    code, out = adopt_command(*args, "--accept-drift")
    assert code == 0, out
    accepted = json.loads(out)["targets"][0]
    assert [r["version"] for r in accepted["imported"] if r["drift_accepted"]] == ["3"]
    # Our history holds our checksum of the script as it is now: the engine's drift check passes.
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=[tenants[0].slug]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    assert [a["version"] or a["script"] for a in execution.targets.get().applied_versions] == [
        "6",
        "7",
        "8",
        "9",
        "R__views.sql",
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_adoption_waits_for_the_migration_lock_of_a_running_target_and_reports_it(small_fleet, sets_dir, settings):
    settings.MIGRATION_LOCK_WAIT = 0.2
    mset = load_set(sets_dir / "tenant", "tenant")
    tenant = small_fleet.tenants_in("us-east")[0]
    with small_fleet.connect("shared-us") as conn:
        flyway_tenant(conn, tenant, mset.versions[:2])
    selection = TargetSelection(scope="tenant", tenants=[tenant.slug])
    with small_fleet.connect("shared-us") as run:  # a run of the engine holds the schema's lock
        run.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, tenant.schema_name])
        target = services.flyway_adopt(selection=selection, actor="t")["targets"][0]
    assert target["status"] == "error"
    assert "another run holds the migration lock" in target["message"]
    with small_fleet.connect("shared-us") as conn:
        assert not has_our_history(conn, tenant.schema_name)
    assert services.flyway_adopt(selection=selection, actor="t")["adopted"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_targets_without_a_flyway_history_are_reported_and_left_alone(small_fleet):
    code, out = adopt_command("--scope", "tenant", "--tenant=eu000")
    assert code == 0
    assert "no_flyway_history" in out
    with small_fleet.connect("shared-eu") as conn:
        assert not has_our_history(conn, "tenant_eu000")


# --- baselines ----------------------------------------------------------------------------------------------------


def migrate_by_hand(conn: psycopg.Connection, tenant: Tenant, scripts: list[Script]) -> None:
    """Run scripts on a tenant's schema with no history at all, as an operator with psql would."""
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(REGISTRY_USER)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(tenant.schema_name)))
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(tenant.schema_name)))
    for script in scripts:
        conn.execute(script.render(tenant_context(tenant)))
    conn.execute("RESET search_path; RESET ROLE")


def baseline_command(*args: str) -> str:
    out = StringIO()
    call_command("baseline", *args, stdout=out)
    return out.getvalue()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_baseline_marks_a_hand_migrated_tenant_and_runs_apply_only_what_is_above_it(small_fleet, sets_dir):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenant = small_fleet.tenants_in("us-east")[0]
    with small_fleet.connect("shared-us") as conn:
        migrate_by_hand(conn, tenant, mset.versions[:5])

    out = baseline_command("--tenant", tenant.slug, "--version", "5", "--dry-run")
    assert "would be baselined at version 5; next run: 6, 7, 8, 9, R__views.sql" in out
    with small_fleet.connect("shared-us") as conn:
        assert not has_our_history(conn, tenant.schema_name)
    out = baseline_command("--tenant", tenant.slug, "--version", "5")
    assert f"shared-us/{tenant.schema_name}" in out
    assert "baselined at version 5" in out
    with small_fleet.connect("shared-us") as conn:
        assert our_history(conn, tenant.schema_name) == [("BASELINE", "5", flyway.BASELINE_SCRIPT, cli_actor())]

    with pytest.raises(CommandError, match="already baselined at version 5"):
        baseline_command("--tenant", tenant.slug, "--version", "3")
    with pytest.raises(CommandError, match="schema tenant_us001 does not exist"):
        baseline_command("--tenant", "us001", "--version", "5")
    with pytest.raises(CommandError, match="A baseline is above version 0"):
        baseline_command("--tenant", tenant.slug, "--version", "0")

    selection = TargetSelection(scope="tenant", tenants=[tenant.slug])
    execution = services.execution_start(
        selection=selection, options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    run = execution.targets.get()
    assert (run.from_version, run.to_version) == ("5", "9")
    assert [a["version"] or a["script"] for a in run.applied_versions] == ["6", "7", "8", "9", "R__views.sql"]
    with pytest.raises(CommandError, match="version\\(s\\) 6, 7, 8, 9 at or above 6 are already applied"):
        baseline_command("--tenant", tenant.slug, "--version", "6")

    # A rollback stops at the baseline: versions up to it were never run here.
    rollback = services.target_rollback(
        connection=tenant.connection, schema=tenant.schema_name, to_version="0", actor="t", origin=Origin.API, wait=True
    )
    undone = rollback.targets.get()
    assert rollback.status == ExecutionStatus.COMPLETED, rollback.error
    assert undone.to_version == "5"
    assert "now at its baseline 5" in undone.applied_versions[-1]["notes"][0]
    with small_fleet.connect("shared-us") as conn:
        assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{tenant.schema_name}.projects"]).fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_undo_below_the_baseline_is_refused_before_any_change(small_fleet, sets_dir):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenant = small_fleet.tenants_in("us-east")[0]
    with small_fleet.connect("shared-us") as conn:
        flyway_tenant(conn, tenant, mset.versions[:3])
    services.flyway_adopt(selection=TargetSelection(scope="tenant", tenants=[tenant.slug]), actor="t")
    with small_fleet.connect("shared-us") as conn:
        # Versions 4 and 5 by hand, without Flyway, then declared with a baseline.
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(REGISTRY_USER)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(tenant.schema_name)))
        for script in mset.versions[3:5]:
            conn.execute(script.render(tenant_context(tenant)))
    selection = services.baseline_selection(tenant=tenant.slug)
    assert services.target_baseline(selection=selection, version="5", actor="t")["targets"][0]["status"] == "baselined"

    before = MigrationExecution.objects.count()
    with pytest.raises(RollbackRefused, match="baselined at version 5"):
        services.target_rollback(
            connection=tenant.connection,
            schema=tenant.schema_name,
            to_version="2",
            actor="t",
            origin=Origin.API,
            wait=True,
        )
    assert MigrationExecution.objects.count() == before  # refused up front: nothing recorded, nothing run
    with small_fleet.connect("shared-us") as conn:
        assert [r[1] for r in our_history(conn, tenant.schema_name) if r[0] == "SQL"] == ["1", "2", "3"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_baseline_api_needs_migrations_manage_and_answers_409_on_conflict(small_fleet, sets_dir, api_as):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenant = small_fleet.tenants_in("eu-west")[0]
    with small_fleet.connect("shared-eu") as conn:
        migrate_by_hand(conn, tenant, mset.versions[:2])
    body = {"tenant": tenant.slug, "version": "2"}

    refused = api_as(roles.MIGRATIONS_EXECUTE).post(BASELINE_URL, body, format="json")
    assert refused.status_code == 403
    assert refused.json()["details"]["required_role"] == roles.MIGRATIONS_MANAGE

    manager = api_as(roles.MIGRATIONS_MANAGE)
    response = manager.post(BASELINE_URL, body, format="json")
    assert response.status_code == 200, response.content
    target = response.json()["targets"][0]
    assert (target["status"], target["version"], target["tenant"]) == ("baselined", "2", tenant.slug)
    assert target["pending_after"] == ["3", "4", "5", "6", "7", "8", "9", "R__views.sql"]

    conflict = manager.post(BASELINE_URL, body, format="json")
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "baseline_refused"
    assert conflict.json()["details"]["targets"] == {
        f"shared-eu/{tenant.schema_name}": "already baselined at version 2"
    }

    assert manager.post(BASELINE_URL, {"tenant": "nobody", "version": "2"}, format="json").status_code == 404
    both = manager.post(BASELINE_URL, {"tenant": tenant.slug, "connection": "shared-eu", "version": "2"}, format="json")
    assert both.status_code == 400
    assert set(both.json()["details"]) == {"tenant", "connection"}
    bad = manager.post(BASELINE_URL, {"tenant": tenant.slug, "version": "v2"}, format="json")
    assert bad.status_code == 400
    assert list(bad.json()["details"]) == ["version"]

    # A connection's own target is its default schema, not the tenants it hosts.
    shared = manager.post(BASELINE_URL, {"connection": "shared-eu", "version": "1", "dry_run": True}, format="json")
    assert shared.status_code == 200, shared.content
    assert [t["target"] for t in shared.json()["targets"]] == ["shared-eu/public"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_adopt_api_reports_per_target_and_needs_migrations_manage(small_fleet, sets_dir, api_as):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenant = small_fleet.tenants_in("us-east")[1]
    with small_fleet.connect("shared-us") as conn:
        flyway_tenant(conn, tenant, mset.versions[:4])
    body = {"scope": "tenant", "tenants": [tenant.slug, "us002"], "dry_run": True}

    assert api_as(roles.MIGRATIONS_EXECUTE).post(ADOPT_URL, body, format="json").status_code == 403
    manager = api_as(roles.MIGRATIONS_MANAGE)
    preview = manager.post(ADOPT_URL, body, format="json")
    assert preview.status_code == 200, preview.content
    statuses = {t["tenant"]: t["status"] for t in preview.json()["targets"]}
    assert statuses == {tenant.slug: "adopted", "us002": "no_flyway_history"}
    done = manager.post(ADOPT_URL, {**body, "dry_run": False}, format="json").json()
    assert done["adopted"] == 1
    adopted = next(t for t in done["targets"] if t["tenant"] == tenant.slug)
    assert [r["version"] for r in adopted["imported"]] == ["1", "2", "3", "4"]

    unknown = manager.post(ADOPT_URL, {"scope": "tenant", "tenants": ["nobody"]}, format="json")
    assert unknown.status_code == 404
    assert unknown.json()["details"] == {"tenants": ["nobody"]}
    invalid = manager.post(ADOPT_URL, {"scope": "everything"}, format="json")
    assert invalid.status_code == 400
    assert "scope" in invalid.json()["details"]


# --- the admin ----------------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_admin_shows_the_dry_run_report_before_adopting(small_fleet, sets_dir, client, make_user):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenant = small_fleet.tenants_in("us-east")[0]
    with small_fleet.connect("shared-us") as conn:
        flyway_tenant(conn, tenant, mset.versions[:5])
    changelist = reverse("admin:connections_tenant_changelist")
    page = reverse("admin:migrations_runner_adopt_flyway")
    action = {"action": "adopt_flyway_selected", "_selected_action": [tenant.pk], "index": "0"}

    client.force_login(make_user(roles.MIGRATIONS_EXECUTE, roles.DATABASES_READ))
    assert client.post(changelist, action).status_code == 403
    assert client.get(page, {"scope": "tenant", "tenants": tenant.slug}).status_code == 403

    client.force_login(make_user(roles.MIGRATIONS_MANAGE, roles.DATABASES_READ))
    redirect = client.post(changelist, action)
    assert redirect.status_code == 302
    assert redirect.url.startswith(page)
    preview = client.get(redirect.url)
    assert preview.status_code == 200
    html = preview.content.decode()
    assert "Adopt Flyway history?" in html
    assert 'id="confirm-adopt"' in html
    assert "6, 7, 8, 9" in html
    with small_fleet.connect("shared-us") as conn:
        assert not has_our_history(conn, tenant.schema_name)

    done = client.post(page, {"scope": "tenant", "tenants": tenant.slug, "post": "yes"})
    assert done.status_code == 200
    assert "Flyway history adopted" in done.content.decode()
    with small_fleet.connect("shared-us") as conn:
        assert [r[1] for r in our_history(conn, tenant.schema_name)] == ["1", "2", "3", "4", "5"]
    entry = LogEntry.objects.get(object_id=str(tenant.pk))
    assert entry.change_message.startswith("Adopted Flyway history: imported 5 sql row(s)")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_admin_baselines_a_tenant_after_a_preview_and_shows_a_conflict(small_fleet, sets_dir, client, make_user):
    mset = load_set(sets_dir / "tenant", "tenant")
    tenant = small_fleet.tenants_in("us-east")[2]
    with small_fleet.connect("shared-us") as conn:
        migrate_by_hand(conn, tenant, mset.versions[:3])
    page = reverse("admin:migrations_runner_baseline")
    client.force_login(make_user(roles.MIGRATIONS_EXECUTE))
    assert client.get(page, {"tenants": tenant.slug}).status_code == 403

    client.force_login(make_user(roles.MIGRATIONS_MANAGE, roles.DATABASES_READ))
    form = client.get(page, {"tenants": tenant.slug})
    assert form.status_code == 200
    assert 'id="baseline-form"' in form.content.decode()
    preview = client.get(page, {"tenants": tenant.slug, "version": "3"})
    assert preview.status_code == 200
    assert 'id="confirm-baseline"' in preview.content.decode()
    with small_fleet.connect("shared-us") as conn:
        assert not has_our_history(conn, tenant.schema_name)
    done = client.post(page, {"tenants": tenant.slug, "version": "3", "post": "yes"})
    assert done.status_code == 302
    assert done.url == reverse("admin:connections_tenant_changelist")
    with small_fleet.connect("shared-us") as conn:
        assert [r[:2] for r in our_history(conn, tenant.schema_name)] == [("BASELINE", "3")]
    conflict = client.get(page, {"tenants": tenant.slug, "version": "2"})
    assert conflict.status_code == 409
    assert "already baselined at version 3" in conflict.content.decode()


# --- baselines over undone versions -------------------------------------------------------------------------------


def rolled_back_to_3(fleet, tenant: Tenant) -> None:
    """Migrate a tenant to the set's latest version (9), then roll it back to 3: the history shows 4-9 undone."""
    selection = TargetSelection(scope="tenant", tenants=[tenant.slug])
    assert (
        services.execution_start(
            selection=selection, options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
        ).status
        == ExecutionStatus.COMPLETED
    )
    rollback = services.target_rollback(
        connection=tenant.connection, schema=tenant.schema_name, to_version="3", actor="t", origin=Origin.API, wait=True
    )
    assert rollback.status == ExecutionStatus.COMPLETED, rollback.error


def baseline_rows(fleet, tenant: Tenant) -> list[tuple[str, str]]:
    with fleet.connect(tenant.connection.name) as conn:
        return conn.execute(
            sql.SQL("SELECT version, description FROM {} WHERE type = 'BASELINE'").format(
                sql.Identifier(tenant.schema_name, "infra_schema_history")
            )
        ).fetchall()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_baseline_over_undone_versions_needs_force_and_a_reason_which_are_recorded(
    small_fleet, sets_dir, api_as, caplog
):
    tenant = small_fleet.tenants_in("eu-west")[1]
    rolled_back_to_3(small_fleet, tenant)
    label = f"shared-eu/{tenant.schema_name}"
    manager = api_as(roles.MIGRATIONS_MANAGE)

    refused = manager.post(BASELINE_URL, {"tenant": tenant.slug, "version": "9"}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"] == "baseline_over_undone"
    assert refused.json()["details"]["undone"] == {label: ["4", "5", "6", "7", "8", "9"]}
    below = manager.post(BASELINE_URL, {"tenant": tenant.slug, "version": "3", "dry_run": True}, format="json")
    assert below.status_code == 409  # 3 is applied: the usual conflict, not the undone versions
    assert below.json()["error"] == "baseline_refused"
    no_reason = manager.post(BASELINE_URL, {"tenant": tenant.slug, "version": "9", "force": True}, format="json")
    assert no_reason.status_code == 400
    assert list(no_reason.json()["details"]) == ["reason"]
    with pytest.raises(CommandError, match="undone versions"):
        baseline_command("--tenant", tenant.slug, "--version", "5")
    assert baseline_rows(small_fleet, tenant) == []

    out = baseline_command("--tenant", tenant.slug, "--version", "5", "--force", "--reason", "restored 4-5 by hand")
    assert "baselined at version 5" in out
    assert "forced over undone version(s) 4, 5: restored 4-5 by hand" in out
    assert baseline_rows(small_fleet, tenant) == [
        ("5", "<< Baseline >> forced over undone version(s) 4, 5: restored 4-5 by hand")
    ]
    logged = [r for r in caplog.records if r.getMessage() == "target baseline"]
    assert (logged[-1].levelname, logged[-1].forced_over_undone, logged[-1].reason) == (
        "WARNING",
        ["4", "5"],
        "restored 4-5 by hand",
    )
    forced = manager.post(
        BASELINE_URL, {"tenant": tenant.slug, "version": "9", "force": True, "reason": "restore"}, format="json"
    )
    assert forced.status_code == 200, forced.content
    assert forced.json()["targets"][0]["warnings"] == ["forced over undone version(s) 6, 7, 8, 9: restore"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_admin_baselines_over_undone_versions_only_when_forced_with_a_reason(
    small_fleet, sets_dir, client, make_user
):
    tenant = small_fleet.tenants_in("us-east")[1]
    rolled_back_to_3(small_fleet, tenant)
    page = reverse("admin:migrations_runner_baseline")
    client.force_login(make_user(roles.MIGRATIONS_MANAGE, roles.DATABASES_READ))

    refused = client.get(page, {"tenants": tenant.slug, "version": "9"})
    assert refused.status_code == 409
    assert "undone: 4, 5, 6, 7, 8, 9" in refused.content.decode()
    preview = client.get(page, {"tenants": tenant.slug, "version": "9", "force": "on", "reason": "schema restored"})
    assert preview.status_code == 200
    html = preview.content.decode()
    assert 'id="confirm-baseline"' in html
    assert '<input type="hidden" name="reason" value="schema restored">' in html
    assert baseline_rows(small_fleet, tenant) == []
    done = client.post(
        page, {"tenants": tenant.slug, "version": "9", "force": "on", "reason": "schema restored", "post": "yes"}
    )
    assert done.status_code == 302
    assert baseline_rows(small_fleet, tenant) == [
        ("9", "<< Baseline >> forced over undone version(s) 4, 5, 6, 7, 8, 9: schema restored")
    ]
