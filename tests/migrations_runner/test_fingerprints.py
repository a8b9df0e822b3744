"""Schema fingerprints: the catalog read and its normalisation, diffs, recording after runs, fleet scans, the
majority and outliers, and the command, API and admin pages over them."""

from __future__ import annotations

import json
import threading
import time
from io import StringIO

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from psycopg import sql

from connections.models import DatabaseConnection, Tenant
from infra_site import roles
from migrations_runner import services
from migrations_runner.engine import apply as engine
from migrations_runner.engine import fingerprint
from migrations_runner.engine.sets import load_set
from migrations_runner.models import ExecutionStatus, FingerprintScan, Origin, SchemaFingerprint, SchemaShape
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.selectors import fingerprints as fingerprint_selectors
from migrations_runner.services import fingerprints as fingerprint_services
from tests.support.fleet import build_fleet, bulk_fleet, clear_bulk_fleet, create_owned_table, drop_fleet
from tests.support.sets import SHIPPED_SETS

FLEET = reverse("admin:migrations_runner_fleet")
TENANT_LATEST = "9"
COLUMN_ADDED = "column tasks.archived added (boolean, nullable)"
INDEX_MISSING = "index tasks_open_due_date_idx missing"

REGIONS = ("us-east", "eu-west")


def migrate_schema(pg, schema: str) -> None:
    """Apply the shipped tenant set to ``schema`` of ``pg``'s database with the engine alone."""
    source = engine.ConnectionSource(pg.connect)
    spec = engine.TargetSpec(
        schema=schema,
        create_schema=schema != "public",
        context={"schema": schema, "tenant_slug": schema, "region": "", "database_type": "tenant"},
    )
    outcome = engine.apply_target(
        source, spec, load_set(SHIPPED_SETS / "tenant", "tenant"), engine.ApplyOptions(installed_by="test")
    )
    source.close()
    assert outcome.status == "succeeded", outcome.error


def alter(conn: psycopg.Connection, schema: str, statement: str) -> None:
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(statement)
    conn.execute("RESET search_path")


def add_column(conn: psycopg.Connection, schema: str) -> None:
    alter(conn, schema, "ALTER TABLE tasks ADD COLUMN archived boolean")


def drop_index(conn: psycopg.Connection, schema: str) -> None:
    alter(conn, schema, "DROP INDEX tasks_open_due_date_idx")


class CountingConnection:
    """A psycopg connection that counts the statements sent through it."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn, self.statements = conn, 0

    def execute(self, *args, **kwargs):
        self.statements += 1
        return self.conn.execute(*args, **kwargs)


# --- the engine: the catalog read, its normalisation and diffs -----------------------------------------------------


@pytest.mark.postgres
def test_identical_tenants_in_different_schemas_and_in_public_hash_equal(pg):
    for schema in ("tenant_a", "tenant_b", "public"):
        migrate_schema(pg, schema)
    with pg.connect() as conn:
        prints = fingerprint.read_fingerprints(conn, ["tenant_a", "tenant_b", "public"])
    assert len({p.hash for p in prints.values()}) == 1
    objects = prints["tenant_a"].objects
    assert objects["column:tasks.priority"] == {"type": "smallint", "nullable": False, "default": "3"}
    assert objects["constraint:tasks.tasks_project_id_fkey"]["definition"] == (
        "FOREIGN KEY (project_id) REFERENCES projects(id) ON DELETE CASCADE"
    )
    # V7's function names its schema in SET search_path: the name becomes a placeholder.
    function = objects["function:refresh_invoice_total()"]["definition"]
    assert "SET search_path TO '${schema}', 'pg_temp'" in function
    assert "tenant_a" not in json.dumps(objects)
    kinds = {key.partition(":")[0] for key in objects}
    assert kinds == {"table", "column", "constraint", "index", "trigger", "view", "sequence", "function"}


@pytest.mark.postgres
def test_one_statement_reads_many_schemas(pg):
    for schema in ("tenant_a", "tenant_b"):
        migrate_schema(pg, schema)
    with pg.connect() as conn:
        counting = CountingConnection(conn)
        prints = fingerprint.read_fingerprints(counting, ["tenant_a", "tenant_b", "tenant_none"])
    assert counting.statements == 1
    assert prints["tenant_a"].hash == prints["tenant_b"].hash
    assert prints["tenant_none"].exists is False
    assert prints["tenant_none"].objects == {}


@pytest.mark.postgres
def test_tenants_with_the_same_objects_are_decoded_once_and_hash_as_computed_in_full(pg, monkeypatch):
    """The catalog writes each schema's objects in the same order, so tenants migrated alike give the same text
    but for their names: the first is decoded and hashed, the others take its fingerprint."""
    schemas = ["tenant_a", "tenant_b", "tenant_c"]
    for schema in schemas:
        migrate_schema(pg, schema)
    fingerprint._shapes.clear()
    decoded, real = [], fingerprint.fingerprint_of
    monkeypatch.setattr(
        fingerprint, "fingerprint_of", lambda schema, raw, **kw: decoded.append(schema) or real(schema, raw, **kw)
    )
    with pg.connect() as conn:
        prints = fingerprint.read_fingerprints(conn, schemas)
        texts = dict(
            conn.execute(
                fingerprint.CATALOG_QUERY, {"schemas": schemas, "ignored": list(fingerprint.IGNORED_TABLES)}
            ).fetchall()
        )
    assert decoded == ["tenant_a"]
    for schema in schemas:
        assert prints[schema] == real(schema, json.loads(texts[schema]))
        assert prints[schema].schema == schema


@pytest.mark.postgres
def test_the_history_table_and_object_ids_do_not_count(pg):
    for schema in ("tenant_a", "tenant_b"):
        migrate_schema(pg, schema)
    with pg.connect() as conn:
        before = fingerprint.read_fingerprints(conn, ["tenant_a"])["tenant_a"]
        assert not [key for key in before.objects if "infra_schema_history" in key + json.dumps(before.objects[key])]
        # History rows, and a view dropped and created again (a new OID), change nothing.
        alter(conn, "tenant_b", "DELETE FROM infra_schema_history WHERE version = '1'")
        definition = conn.execute("SELECT pg_get_viewdef('tenant_b.project_overview'::regclass)").fetchone()[0]
        alter(conn, "tenant_b", "DROP VIEW project_overview")
        alter(conn, "tenant_b", f"CREATE VIEW project_overview AS {definition}")
        after = fingerprint.read_fingerprints(conn, ["tenant_b"])["tenant_b"]
        alter(conn, "tenant_b", "DROP TABLE infra_schema_history")
        without_history = fingerprint.read_fingerprints(conn, ["tenant_b"])["tenant_b"]
    assert before.hash == after.hash == without_history.hash


@pytest.mark.postgres
def test_diff_names_each_object_added_missing_or_changed_and_how(pg):
    for schema in ("tenant_a", "tenant_b"):
        migrate_schema(pg, schema)
    with pg.connect() as conn:
        add_column(conn, "tenant_b")
        drop_index(conn, "tenant_b")
        alter(conn, "tenant_b", "ALTER TABLE users ALTER COLUMN role SET DEFAULT 'guest'")
        alter(conn, "tenant_b", "ALTER TABLE tasks ALTER COLUMN title DROP NOT NULL")
        alter(conn, "tenant_b", "CREATE TABLE labels (id integer PRIMARY KEY, name text NOT NULL)")
        alter(conn, "tenant_b", "DROP VIEW open_tasks_per_project")
        prints = fingerprint.read_fingerprints(conn, ["tenant_a", "tenant_b"])
    entries = fingerprint.diff(prints["tenant_a"].objects, prints["tenant_b"].objects)
    assert [entry.text for entry in entries] == [
        "table labels added (id integer, name text)",
        COLUMN_ADDED,
        "column tasks.title changed: not null -> nullable",
        "column users.role changed: default 'member'::text -> 'guest'::text",
        INDEX_MISSING,
        "view open_tasks_per_project missing",
    ]
    assert entries[1].as_dict() == {
        "change": "added",
        "kind": "column",
        "name": "tasks.archived",
        "detail": "boolean, nullable",
        "text": COLUMN_ADDED,
    }


def test_diff_shows_a_changed_type_and_a_long_definition_shortened():
    majority = {"column:users.email": {"type": "text", "nullable": False}, "view:v": {"definition": "SELECT 1"}}
    outlier = {"column:users.email": {"type": "character varying(200)", "nullable": False}, "view:v": {}}
    outlier["view:v"] = {"definition": "SELECT " + ", ".join(f"c{i}" for i in range(100))}
    entries = fingerprint.diff(majority, outlier)
    assert entries[0].text == "column users.email changed: type text -> character varying(200)"
    assert entries[1].text.startswith("view v changed: definition SELECT 1 -> SELECT c0, c1")
    assert entries[1].text.endswith("…")


def test_diff_of_a_long_definition_shows_where_it_changed():
    body = "CREATE FUNCTION f() RETURNS void AS $$ BEGIN " + " ".join(f"x{i} := {i};" for i in range(60)) + " END $$"
    changed = body.replace("x40 := 40;", "x40 := 41;")
    (entry,) = fingerprint.diff({"function:f()": {"definition": body}}, {"function:f()": {"definition": changed}})
    before, after = entry.detail.removeprefix("definition ").split(" -> ")
    assert "x40 := 40;" in before
    assert "x40 := 41;" in after
    assert before.startswith("…")


def test_diff_says_nullability_flags_lists_and_settings_in_words():
    majority = {
        "column:users.email": {"type": "text", "nullable": False},
        "trigger:tasks.touch": {"enabled": True, "events": ["INSERT"], "options": {"fillfactor": 90}},
        "sequence:users_id_seq": {"owned_by": "users.id", "increment": 1},
        "table:users": {"kind": "table"},
        "column:users.id": {"type": "bigint", "nullable": False},
    }
    outlier = {
        "column:users.email": {"type": "text", "nullable": True},
        "trigger:tasks.touch": {"enabled": False, "events": ["INSERT", "UPDATE"], "options": None},
        "sequence:audit_seq": {"increment": 5, "cycle": True},
        "column:users.id": {
            "type": "bigint",
            "nullable": False,
            "default": None,
            "identity": "always",
            "collation": None,
        },
    }
    outlier["table:users"] = {"kind": "table"}
    texts = {entry.text for entry in fingerprint.diff(majority, outlier)}
    assert "column users.email changed: not null -> nullable" in texts
    assert "column users.id changed: identity none -> always" in texts
    assert (
        "trigger tasks.touch changed: enabled yes -> no; events INSERT -> INSERT, UPDATE; options fillfactor 90 -> none"
    ) in texts
    assert "sequence audit_seq added (cycle yes; increment 5)" in texts
    assert "sequence users_id_seq missing" in texts


def test_the_hash_is_of_canonical_json_whatever_the_order():
    first = {"table:a": {"kind": "table", "unlogged": False}, "column:a.x": {"type": "int", "nullable": True}}
    second = {"column:a.x": {"nullable": True, "type": "int"}, "table:a": {"unlogged": False, "kind": "table"}}
    assert fingerprint.digest(first) == fingerprint.digest(second)
    assert fingerprint.digest(first) != fingerprint.digest({**first, "index:i": {"definition": "x"}})


# --- recording after runs, scans, the report ---------------------------------------------------------------------


@pytest.fixture
def fleet30(pg_server, sets_dir, db):
    """Admin, two shared databases with 15 tenants each, analytics."""
    built = build_fleet(pg_server, tenants_per_region=15)
    yield built
    drop_fleet(built)


def migrate_tenants(**options):
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(**options),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.error
    return execution


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_tenants_altered_by_hand_are_the_only_outliers_each_with_a_diff_naming_the_object(fleet30):
    execution = migrate_tenants(batch_size=8)
    recorded = SchemaFingerprint.objects.filter(database_type="tenant")
    assert recorded.count() == 30
    assert set(recorded.values_list("version", "execution", flat=False)) == {(TENANT_LATEST, execution.pk)}
    assert fingerprint_selectors.fingerprint_report().outliers == []

    with_column, without_index = fleet30.tenants[3], fleet30.tenants[22]
    with fleet30.connect(with_column.connection.name) as conn:
        add_column(conn, with_column.schema_name)
    with fleet30.connect(without_index.connection.name) as conn:
        drop_index(conn, without_index.schema_name)
    # What was recorded after the run does not know yet.
    assert fingerprint_selectors.fingerprint_report().outliers == []

    scan = services.fleet_fingerprint_scan()
    assert scan.scanned == 34  # the 30 tenants, and the default schemas of admin, two shared, analytics
    assert scan.unreachable == []
    report = fingerprint_selectors.fingerprint_report()
    assert {(o.schema, tuple(entry.text for entry in o.diff)) for o in report.outliers} == {
        (with_column.schema_name, (COLUMN_ADDED,)),
        (without_index.schema_name, (INDEX_MISSING,)),
    }
    tenants = next(g for g in report.groups if g.database_type == "tenant")
    assert (tenants.version, tenants.targets, tenants.outliers, tenants.tied) == (TENANT_LATEST, 30, 2, False)
    assert tenants.fingerprints[0][1] == 28
    assert {outlier.group.majority for outlier in report.outliers} == {tenants.majority}
    # Filters narrow the outliers listed, not the majority.
    us_only = fingerprint_selectors.fingerprint_report(TargetSelection(regions=[with_column.connection.region]))
    assert [o.schema for o in us_only.outliers] == [with_column.schema_name]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_records_the_fingerprint_of_each_target_it_succeeded_on_only(small_fleet, sets_dir):
    victim = small_fleet.tenants[0]
    with small_fleet.connect("shared-us") as conn:
        create_owned_table(conn, victim.schema_name, "projects")
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    assert execution.targets_failed == 1
    recorded = {row.schema_name: row for row in SchemaFingerprint.objects.all()}
    assert set(recorded) == {t.schema_name for t in small_fleet.tenants[1:]}
    tenant = small_fleet.tenants[1]
    row = recorded[tenant.schema_name]
    assert (row.version, row.execution_id, row.tenant_id, row.database_type) == (
        TENANT_LATEST,
        execution.pk,
        tenant.pk,
        "tenant",
    )
    with small_fleet.connect(tenant.connection.name) as conn:
        actual = fingerprint.read_fingerprints(conn, [tenant.schema_name])[tenant.schema_name]
    assert row.fingerprint == actual.hash
    assert SchemaShape.objects.get(pk=actual.hash).definitions == actual.objects
    assert SchemaShape.objects.count() == 1  # shared by every target


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_recording_after_runs_can_be_turned_off(small_fleet, settings):
    settings.MIGRATION_FINGERPRINT_AFTER_RUN = False
    assert migrate_tenants().targets_succeeded == 6
    assert not SchemaFingerprint.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lane_reads_its_fingerprints_in_one_query_per_database_and_batch(small_fleet, monkeypatch):
    real, calls = fingerprint_services.fingerprint.read_fingerprints, []

    def counted(conn, schemas):
        calls.append(sorted(schemas))
        return real(conn, schemas)

    monkeypatch.setattr(fingerprint_services.fingerprint, "read_fingerprints", counted)
    assert migrate_tenants(batch_size=1).targets_succeeded == 6  # one lane: one batch, flushed as it leaves
    assert sorted(calls) == sorted([sorted(t.schema_name for t in small_fleet.tenants_in(r)) for r in REGIONS])
    assert SchemaFingerprint.objects.count() == 6


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failure_to_fingerprint_never_fails_the_run(small_fleet, monkeypatch, caplog):
    def broken(conn, schemas):
        raise psycopg.OperationalError("catalog unreadable")

    monkeypatch.setattr(fingerprint_services.fingerprint, "read_fingerprints", broken)
    execution = migrate_tenants()
    assert execution.targets_succeeded == 6
    assert not SchemaFingerprint.objects.exists()
    warnings = [r for r in caplog.records if r.getMessage() == "could not record the schema fingerprint of a target"]
    # One warning per batch and database: the lanes' batches hold the 6 targets of the 2 shared databases.
    assert 2 <= len(warnings) <= 6
    assert sum(w.targets for w in warnings) == 6
    assert {(w.levelname, w.error) for w in warnings} == {("WARNING", "catalog unreadable")}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_scan_reports_a_database_it_cannot_reach_and_records_the_others(small_fleet, closed_port):
    DatabaseConnection.objects.filter(name="shared-eu").update(port=closed_port)
    progress = []
    scan = services.fleet_fingerprint_scan(on_progress=lambda label, status: progress.append((label, status)))
    assert scan.scanned == 6  # admin, shared-us and its 3 tenants, analytics
    assert [(u["connection"], u["targets"]) for u in scan.unreachable] == [("shared-eu", 4)]
    assert len(progress) == 10
    assert sorted(label for label, status in progress if status == "unreachable") == sorted(
        ["shared-eu/public", *(f"shared-eu/{t.schema_name}" for t in small_fleet.tenants_in("eu-west"))]
    )
    assert SchemaFingerprint.objects.count() == 6
    assert SchemaFingerprint.objects.filter(execution__isnull=True).count() == 6


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_scan_reads_concurrently_but_at_most_the_per_server_cap_at_once(small_fleet, settings, monkeypatch):
    settings.MIGRATION_MAX_PER_DATABASE = 2
    monkeypatch.setattr(fingerprint_services, "SCAN_CHUNK", 1)
    real = fingerprint.read_fingerprints
    lock, running, peak = threading.Lock(), [0], [0]

    def slow(conn, schemas):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)  # every read lasts long enough to overlap the others: the cap is what is measured
        try:
            return real(conn, schemas)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(fingerprint_services.fingerprint, "read_fingerprints", slow)
    scan = services.fleet_fingerprint_scan()
    assert scan.scanned == 10
    assert peak[0] == 2  # every database of the fleet is on the one test server


@pytest.mark.django_db
def test_a_tie_names_the_first_fingerprint_by_hash_and_says_so():
    connection = DatabaseConnection.objects.create(
        name="solo", database_type="admin", host="127.0.0.1", port=5432, database_name="solo", username="u"
    )
    other = DatabaseConnection.objects.create(
        name="solo-2", database_type="admin", host="127.0.0.1", port=5432, database_name="solo2", username="u"
    )
    for objects in ({}, {"table:t": {"kind": "table"}}):
        SchemaShape.objects.create(fingerprint=fingerprint.digest(objects), definitions=objects)
    hashes = sorted(SchemaShape.objects.values_list("pk", flat=True))
    for conn, shape in ((connection, hashes[0]), (other, hashes[1])):
        SchemaFingerprint.objects.create(
            connection=conn,
            schema_name="public",
            database_type="admin",
            version="7",
            shape_id=shape,
            taken_at=timezone.now(),
        )
    report = fingerprint_selectors.fingerprint_report()
    (group,) = report.groups
    assert (group.majority, group.tied, group.outliers) == (hashes[0], True, 1)
    (outlier,) = report.outliers
    assert outlier.fingerprint == hashes[1]
    assert outlier.as_dict()["tied"] is True


# --- the command, the API and the admin ----------------------------------------------------------------------------


def command(*args: str) -> tuple[int, str]:
    """Run ``fleet_fingerprint``: its exit status and output (errors other than outliers propagate)."""
    out = StringIO()
    try:
        call_command("fleet_fingerprint", *args, stdout=out)
    except CommandError as exc:
        if "differ from their version's majority" not in str(exc):
            raise
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def one_outlier(small_fleet):
    """The small fleet's tenants migrated, then one of them given a column by hand: (fleet, the altered tenant)."""
    migrate_tenants()
    victim = small_fleet.tenants_in("eu-west")[1]
    with small_fleet.connect(victim.connection.name) as conn:
        add_column(conn, victim.schema_name)
    return small_fleet, victim


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_command_lists_outliers_after_a_scan_and_exits_1(one_outlier):
    _, victim = one_outlier
    code, out = command()
    assert code == 0
    assert "6 target(s) with a fingerprint, 0 outlier(s)." in out
    code, out = command("--scan")
    assert code == 1
    assert "Scanned 10 target(s)" in out
    assert f"shared-eu/{victim.schema_name} (version {TENANT_LATEST})" in out
    assert f"    {COLUMN_ADDED}" in out
    code, out = command("--json", "--region", "us-east")
    assert code == 0
    assert json.loads(out)["outliers"] == []
    code, out = command("--json", "--tenant", victim.slug)
    data = json.loads(out)
    assert code == 1
    assert [entry["text"] for entry in data["outliers"][0]["diff"]] == [COLUMN_ADDED]
    with pytest.raises(CommandError, match="No target matches"):
        command("--scan", "--connection", "no-such-database")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_api_reports_recorded_outliers_after_a_scan_an_executor_starts(one_outlier, api_as):
    _, victim = one_outlier
    api = api_as(roles.MIGRATIONS_READ)
    recorded = api.get("/api/v1/migrations/fingerprints/")
    assert recorded.status_code == 200
    assert (recorded.json()["targets"], recorded.json()["outlier_count"]) == (6, 0)
    forbidden = api.post("/api/v1/migrations/fingerprints/scan/", {"scope": "tenant"}, format="json")
    assert forbidden.status_code == 403
    assert forbidden.json()["details"]["required_role"] == roles.MIGRATIONS_EXECUTE
    assert api.get("/api/v1/migrations/fingerprints/scan/").status_code == 404  # none started yet

    started = api_as(roles.MIGRATIONS_EXECUTE).post("/api/v1/migrations/fingerprints/scan/", {"scope": "tenant"})
    assert started.status_code == 202, started.content
    scan = started.json()
    # MIGRATION_EXECUTOR=inline: the scan ran before the answer, as a queue worker runs it otherwise.
    assert (scan["state"], scan["total"], scan["done"], scan["scanned"]) == ("completed", 6, 6, 6)
    assert scan["unreachable"] == []
    assert scan["finished_at"] >= scan["started_at"]
    assert api.get("/api/v1/migrations/fingerprints/scan/").json() == scan
    assert api.get(f"/api/v1/migrations/fingerprints/scans/{scan['id']}/").json() == scan
    (outlier,) = api.get("/api/v1/migrations/fingerprints/").json()["outliers"]
    assert (outlier["target"], outlier["version"], outlier["state"], outlier["execution"]) == (
        f"shared-eu/{victim.schema_name}",
        TENANT_LATEST,
        "outlier",
        None,
    )
    assert outlier["diff"] == [
        {
            "change": "added",
            "kind": "column",
            "name": "tasks.archived",
            "detail": "boolean, nullable",
            "text": COLUMN_ADDED,
        }
    ]
    assert api.get("/api/v1/migrations/fingerprints/?region=eu-west").json()["outlier_count"] == 1
    assert api.get("/api/v1/migrations/fingerprints/?region=us-east").json()["outlier_count"] == 0
    refused = api_as(roles.MIGRATIONS_EXECUTE).post(
        "/api/v1/migrations/fingerprints/scan/", {"connections": ["nowhere"]}, format="json"
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "no_targets")
    assert FingerprintScan.objects.count() == 1
    missing = api.get("/api/v1/migrations/fingerprints/scans/00000000-0000-0000-0000-000000000000/")
    assert (missing.status_code, missing.json()["error"]) == (404, "fingerprint_scan_not_found")
    bad = api.get("/api/v1/migrations/fingerprints/?region=Not A Region")
    assert bad.status_code == 400


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_fleet_view_marks_the_outlier_and_its_page_shows_the_diff(one_outlier, client, make_user):
    fleet, victim = one_outlier
    services.fleet_fingerprint_scan()
    client.force_login(make_user(roles.MIGRATIONS_READ))
    outlier = SchemaFingerprint.objects.get(schema_name=victim.schema_name)
    page = reverse("admin:migrations_runner_fleet_schema", args=[outlier.pk])
    html = client.get(f"{FLEET}?region=eu-west").content.decode()
    assert "<th>Schema</th>" in html
    assert f'<a href="{page}"><span class="infra-badge infra-badge-bad">outlier</span></a>' in html
    assert html.count(">match</span></a>") == 3  # shared-eu/public and the two other eu tenants
    detail = client.get(page)
    assert detail.status_code == 200
    text = detail.content.decode()
    assert "tasks.archived" in text
    assert "boolean, nullable" in text
    assert outlier.fingerprint in text
    matching = SchemaFingerprint.objects.get(schema_name=fleet.tenants_in("eu-west")[0].schema_name)
    same = client.get(reverse("admin:migrations_runner_fleet_schema", args=[matching.pk])).content.decode()
    assert "This schema matches the majority of its set version." in same
    listing = client.get(reverse("admin:migrations_runner_fleet_schemas")).content.decode()
    assert f'<a href="{page}">shared-eu/{victim.schema_name}</a>' in listing
    assert COLUMN_ADDED in listing
    assert client.get(reverse("admin:migrations_runner_fleet_schema", args=[999999])).status_code == 404
    client.force_login(make_user(roles.DATABASES_READ))
    assert client.get(page).status_code == 403
    assert client.get(reverse("admin:migrations_runner_fleet_schemas")).status_code == 403


def _record_bulk_fingerprints(outlier_every: int) -> None:
    """A fingerprint for every tenant of ``bulk_fleet``: one shape, and another for every ``outlier_every``-th."""
    usual, odd = {"table:t": {"kind": "table"}}, {}
    for objects in (usual, odd):
        SchemaShape.objects.get_or_create(fingerprint=fingerprint.digest(objects), defaults={"definitions": objects})
    rows = [
        SchemaFingerprint(
            connection_id=tenant.connection_id,
            schema_name=tenant.schema_name,
            tenant=tenant,
            database_type="tenant",
            version=TENANT_LATEST,
            shape_id=fingerprint.digest(odd if i % outlier_every == 0 else usual),
            taken_at=timezone.now(),
        )
        for i, tenant in enumerate(Tenant.objects.order_by("slug"))
    ]
    SchemaFingerprint.objects.bulk_create(rows, batch_size=1000)


def _fleet_queries(client) -> int:
    with CaptureQueriesContext(db_connection) as queries:
        assert client.get(FLEET).status_code == 200
    return len(queries)


@pytest.mark.django_db
def test_the_schema_column_costs_two_queries_whatever_the_fleet_size(client, make_user):
    client.force_login(make_user(roles.MIGRATIONS_READ))
    bulk_fleet(10)
    without = _fleet_queries(client)
    _record_bulk_fingerprints(outlier_every=3)
    small = _fleet_queries(client)
    assert small == without + 1  # the groups' majorities (the page's fingerprints are read either way)
    clear_bulk_fleet()
    bulk_fleet(1000)
    _record_bulk_fingerprints(outlier_every=7)
    assert _fleet_queries(client) == small
    html = client.get(FLEET).content.decode()
    assert ">outlier</span></a>" in html
    assert ">match</span></a>" in html
