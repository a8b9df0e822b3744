"""Real Flyway trees run unchanged: scripts in subfolders, Flyway's placeholders and configuration, per-script
configuration, callbacks, out-of-order versions and Flyway's older history table (how the engine reads such a
tree, SQL parsed by PostgreSQL's own parser included, is tested in tests/engine/test_flyway_trees.py)."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from psycopg import sql

from migrations_runner import selectors, services
from migrations_runner.engine import flyway
from migrations_runner.engine.sets import load_set
from migrations_runner.engine.sqltext import split_statements
from migrations_runner.exceptions import InvalidMigrationSets
from migrations_runner.models import ExecutionStatus, Origin, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.postgres import REGISTRY_USER
from tests.support.sets import FLYWAY_DDL, write_tree
from tests.support.waiting import wait_until

# --- a Flyway project's tree --------------------------------------------------------------------------------------

TREE = {
    "flyway.conf": (
        "# the project's own Flyway configuration\n"
        "flyway.url=jdbc:postgresql://db.internal/app\n"
        "flyway.placeholders.app_role={role}\n"
        "flyway.placeholders.retention_days=30\n"
    ),
    "README.md": "How we migrate.\n",
    "R__active_users.sql": (
        "-- refreshed ${flyway:timestamp} by ${flyway:filename}\n"
        "CREATE OR REPLACE VIEW ${flyway:defaultSchema}.active_users AS SELECT id, name FROM users WHERE active;\n"
    ),
    "R__user_names.sql": "CREATE OR REPLACE VIEW ${flyway:defaultSchema}.user_names AS SELECT name FROM users;\n",
    "2022/V1__create_users.sql": (
        "CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL, active boolean NOT NULL DEFAULT true);\n"
        "INSERT INTO users (name) VALUES (E'O\\'Brien; the first'), ('second');\n"
    ),
    "2022/V2__create_settings.sql": (
        "CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);\n"
        "INSERT INTO settings VALUES ('retention_days', '${retention_days}'), ('database', '${flyway:database}'),\n"
        "    ('user', '${flyway:user}'), ('environment', '${flyway:environment}'), ('table', '${flyway:table}');\n"
    ),
    "2023/V3__index_user_names.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_name_idx ON users (name);\n",
    "2023/V4__trim_names.sql": "UPDATE users SET name = trim(name);\n",
    "2023/V4__trim_names.sql.conf": "executeInTransaction=false\n",
    "2024/V5__create_audit.sql": "CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz DEFAULT now());\n",
    "afterMigrate__grants.sql": (
        "GRANT USAGE ON SCHEMA ${flyway:defaultSchema} TO ${app_role};\n"
        "GRANT SELECT ON ALL TABLES IN SCHEMA ${flyway:defaultSchema} TO ${app_role};\n"
    ),
}


@pytest.fixture
def app_role(pg_server):
    """A login-less role the tree's afterMigrate callback grants to (roles are the server's, not a database's)."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    with pg_server.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    yield name
    with pg_server.connect() as conn:
        for database in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'f\\_%'").fetchall():
            with pg_server.connect(database[0]) as db:
                db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def flyway_migrate(conn, schema: str, scripts, context: dict, *, table: str = flyway.TABLE, run_callbacks=()) -> None:
    """Migrate ``schema`` as Flyway does for this tree and write its history as Flyway writes it: the path
    relative to the location in ``script``, a versioned script's checksum on its text as written, a repeatable's
    after placeholder replacement."""
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(REGISTRY_USER)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    conn.execute(sql.SQL(FLYWAY_DDL.replace("flyway_schema_history_", f"{table}_")).format(table=target))
    for rank, script in enumerate(scripts, start=1):
        text = script.render(context)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for statement in split_statements(text):
            conn.execute(statement)
        checksum = flyway.checksum(text if script.kind == "repeatable" else script.content)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (installed_rank, version, description, type, script, checksum, installed_by, "
                "execution_time, success) VALUES (%s, %s, %s, 'SQL', %s, %s, 'deploy_bot', 7, true)"
            ).format(target),
            [rank, str(script.version) if script.version else None, script.description, script.filename, checksum],
        )
    for callback in run_callbacks:
        conn.execute(callback.render(context))
    conn.execute("RESET search_path; RESET ROLE")


def history_rows(conn, schema: str) -> list[tuple]:
    return conn.execute(
        sql.SQL(
            "SELECT type, coalesce(version, ''), script FROM {}.infra_schema_history ORDER BY installed_rank"
        ).format(sql.Identifier(schema))
    ).fetchall()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_flyway_tree_is_adopted_without_drift_and_runs_on_as_flyway_would(small_fleet, sets_dir, app_role):
    write_tree(sets_dir / "tenant", TREE, role=app_role)
    mset = load_set(sets_dir / "tenant", "tenant", placeholders={})
    assert mset.problems == []
    assert mset.warnings == ["flyway.conf: url is not used here", "README.md: not a SQL script: not used"]
    assert [s.filename for s in mset.versions] == [
        "2022/V1__create_users.sql",
        "2022/V2__create_settings.sql",
        "2023/V3__index_user_names.sql",
        "2023/V4__trim_names.sql",
        "2024/V5__create_audit.sql",
    ]
    assert [s.transactional for s in mset.versions] == [True, True, False, False, True]
    assert [(c.event, c.filename) for c in mset.callbacks] == [("afterMigrate", "afterMigrate__grants.sql")]

    # Flyway migrated two tenants to V4 (the second one, long ago, into Flyway's older schema_version table).
    tenants = small_fleet.tenants_in("us-east")[:2]
    flyway_time = "2026-01-05 10:00:00"
    with small_fleet.connect("shared-us") as conn:
        for tenant, table in zip(tenants, [flyway.TABLE, flyway.LEGACY_TABLE], strict=True):
            context = {
                "schema": tenant.schema_name,
                "flyway:defaultSchema": tenant.schema_name,
                "flyway:user": REGISTRY_USER,
                "flyway:database": small_fleet.databases["shared-us"],
                "flyway:timestamp": flyway_time,
                "flyway:table": table,
                "flyway:environment": "testing",
            }
            flyway_migrate(
                conn,
                tenant.schema_name,
                [*mset.versions[:4], *mset.repeatables],
                context,
                table=table,
                run_callbacks=mset.callbacks,
            )
    selection = TargetSelection(scope="tenant", tenants=[t.slug for t in tenants])

    report = services.flyway_adopt(selection=selection, actor="test")
    assert (report["adopted"], report["refused"], report["drifted"]) == (2, 0, 0)
    for target in report["targets"]:
        assert [(r["kind"], r["version"] or r["script"]) for r in target["imported"]] == [
            *(("SQL", str(n)) for n in range(1, 5)),
            ("REPEATABLE", "R__user_names.sql"),
        ]
        # Its ${flyway:timestamp} changed since Flyway's run: re-applied, as Flyway would.
        assert [f["script"] for f in target["skipped"]] == ["R__active_users.sql"]
        assert target["pending_after"] == ["5", "R__active_users.sql"]

    plan = selectors.plan(selection)
    assert [row.callbacks for row in plan] == [["afterMigrate: afterMigrate__grants.sql"]] * 2
    first = services.execution_start(
        selection=selection, options=ExecutionOptions(), actor="operator", origin=Origin.API, wait=True
    )
    assert first.status == ExecutionStatus.COMPLETED, first.error
    for run in first.targets.all():
        assert run.status == TargetStatus.SUCCEEDED, run.error
        assert [a["script"] for a in run.applied_versions] == ["2024/V5__create_audit.sql", "R__active_users.sql"]
    with small_fleet.connect("shared-us") as conn:
        for tenant in tenants:
            rows = history_rows(conn, tenant.schema_name)
            assert [r for r in rows if r[0] == "SQL"][-1] == ("SQL", "5", "2024/V5__create_audit.sql")
            # The afterMigrate callback ran after V5 (the new table is granted) and is not in the history.
            granted = "SELECT has_table_privilege(%s, %s, 'SELECT')"
            assert conn.execute(granted, [app_role, f"{tenant.schema_name}.audit"]).fetchone()[0]
            assert not any("afterMigrate" in r[2] for r in rows)
            settings_rows = dict(
                conn.execute(sql.SQL("SELECT key, value FROM {}.settings").format(sql.Identifier(tenant.schema_name)))
            )
            assert settings_rows["retention_days"] == "30"
            names = conn.execute(
                sql.SQL("SELECT name FROM {}.users ORDER BY id").format(sql.Identifier(tenant.schema_name))
            ).fetchall()
            assert names == [("O'Brien; the first",), ("second",)]

    # Each run re-applies the repeatable whose text holds ${flyway:timestamp}, and nothing else.
    stamp = selectors.plan_timestamp()
    wait_until(lambda: selectors.plan_timestamp() != stamp, timeout=3, interval=0.05, message="the clock moved on")
    second = services.execution_start(
        selection=selection, options=ExecutionOptions(), actor="operator", origin=Origin.API, wait=True
    )
    assert second.status == ExecutionStatus.COMPLETED, second.error
    assert [[a["script"] for a in run.applied_versions] for run in second.targets.all()] == [
        ["R__active_users.sql"]
    ] * 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_flyway_placeholders_get_the_targets_values(small_fleet, sets_dir, app_role, settings):
    settings.MIGRATION_PLACEHOLDERS = {"retention_days": "90"}  # the setting wins over the set's flyway.conf
    write_tree(sets_dir / "tenant", TREE, role=app_role)
    tenant = small_fleet.tenants_in("eu-west")[0]
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=[tenant.slug]),
        options=ExecutionOptions(),
        actor="operator",
        origin=Origin.API,
        wait=True,
    )
    assert execution.status == ExecutionStatus.COMPLETED, execution.targets.get().error
    with small_fleet.connect("shared-eu") as conn:
        values = dict(
            conn.execute(sql.SQL("SELECT key, value FROM {}.settings").format(sql.Identifier(tenant.schema_name)))
        )
        view = conn.execute("SELECT pg_get_viewdef(%s::regclass)", [f"{tenant.schema_name}.active_users"]).fetchone()[0]
    assert values == {
        "retention_days": "90",
        "database": small_fleet.databases["shared-eu"],
        "user": REGISTRY_USER,
        "environment": "testing",
        "table": "infra_schema_history",
    }
    assert "active" in view


BROKEN = {
    "2022/V1__create_users.sql": "CREATE TABLE users (id int);\n",
    "2022/V2__first.sql": "SELECT 1;\n",
    "2023/V2__second.sql": "SELECT 2;\n",
    "2023/V3-missing-separator.sql": "SELECT 3;\n",
    "2023/V4__placeholder.sql": "SELECT '${tenant_name}';\n",
    "2024/V5__syntax.sql": "SELECT 1;\nCREATE TABEL t (x int);\n",
    "2024/V6__copy.sql": "COPY users FROM stdin;\n1\n\\.\n",
    "2024/V7__opts.sql": "SELECT 7;\n",
    "2024/V7__opts.sql.conf": "executeInTransaction=false\nshouldExecute=true\n",
    "beforeClean.sql": "SELECT 1;\n",
    "notes.txt": "x",
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_set_with_problems_is_named_by_check_migration_sets_and_refused_before_anything_runs(small_fleet, sets_dir):
    folder = sets_dir / "tenant"
    write_tree(folder, BROKEN)
    (folder / "2024" / "V8__oops.sql").mkdir()  # a folder where a script is expected
    (folder / "2025").mkdir()
    (folder / "2025" / "V9__gone.sql").symlink_to(folder / "nowhere.sql")

    with pytest.raises(CommandError) as raised:
        call_command("check_migration_sets", "--dir", str(sets_dir), stdout=StringIO())
    message = str(raised.value)
    for expected in (
        "tenant/2023/V2__second.sql: duplicate version 2 (also in 2022/V2__first.sql)",
        "tenant/2023/V3-missing-separator.sql: malformed file name",
        "tenant/2023/V4__placeholder.sql: unknown placeholder(s) ${tenant_name}",
        'tenant/2024/V5__syntax.sql: line 2, column 8: syntax error at or near "TABEL"',
        "tenant/2024/V6__copy.sql: line 1, column 1: COPY ... FROM stdin needs psql",
        "tenant/2024/V7__opts.sql.conf: unknown key shouldExecute",
        "tenant/2024/V8__oops.sql/: a folder where a script is expected",
        "tenant/2025/V9__gone.sql: a link to nothing (broken link)",
    ):
        assert expected in message, message
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_migration_sets", "--dir", str(sets_dir), stdout=out)
    assert "warning: tenant/beforeClean.sql: the beforeClean callback is not run here" in out.getvalue()
    assert "warning: tenant/notes.txt: not a SQL script: not used" in out.getvalue()

    tenant = small_fleet.tenants[0]
    with pytest.raises(InvalidMigrationSets):
        services.execution_start(
            selection=TargetSelection(scope="tenant", tenants=[tenant.slug]),
            options=ExecutionOptions(),
            actor="t",
            origin=Origin.API,
            wait=True,
        )
    with small_fleet.connect("shared-us") as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", [tenant.schema_name]).fetchone()[0] is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_out_of_order_version_is_named_refused_by_default_and_applied_once_when_allowed(small_fleet, sets_dir):
    folder = sets_dir / "tenant"
    write_tree(
        folder,
        {
            "2022/V1__create_users.sql": "CREATE TABLE users (id int);\n",
            "2023/V3__create_tasks.sql": "CREATE TABLE tasks (id int);\n",
        },
    )
    tenant = small_fleet.tenants[0]
    selection = TargetSelection(scope="tenant", tenants=[tenant.slug])
    assert (
        services.execution_start(
            selection=selection, options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
        ).status
        == ExecutionStatus.COMPLETED
    )
    (folder / "2023" / "V2_1__hotfix.sql").write_text("CREATE TABLE hotfix (id int);\n")

    (row,) = selectors.plan(selection)
    assert (row.pending, row.out_of_order) == (["2.1"], ["2.1"])
    assert "out of order: version(s) 2.1 (2023/V2_1__hotfix.sql) are below the applied version 3" in row.refusal
    preview = selectors.plan_preview(selection)
    assert any("out of order" in warning and "refused" in warning for warning in preview.warnings)

    refused = services.execution_start(
        selection=selection, options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
    )
    run = refused.targets.get()
    assert (run.status, run.error["kind"]) == (TargetStatus.FAILED, "out_of_order")
    assert "2023/V2_1__hotfix.sql" in run.error["message"]
    with small_fleet.connect("shared-us") as conn:
        assert [r[1] for r in history_rows(conn, tenant.schema_name)] == ["1", "3"]

    (allowed,) = selectors.plan(selection, out_of_order=True)
    assert allowed.refusal == ""
    applied = services.execution_start(
        selection=selection, options=ExecutionOptions(out_of_order=True), actor="t", origin=Origin.API, wait=True
    )
    assert applied.status == ExecutionStatus.COMPLETED
    assert [a["version"] for a in applied.targets.get().applied_versions] == ["2.1"]
    again = services.execution_start(
        selection=selection, options=ExecutionOptions(out_of_order=True), actor="t", origin=Origin.API, wait=True
    )
    assert again.targets.get().applied_versions == []
    with small_fleet.connect("shared-us") as conn:
        assert [r[1] for r in history_rows(conn, tenant.schema_name)] == ["1", "3", "2.1"]
