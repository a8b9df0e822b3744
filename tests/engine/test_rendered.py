"""History rows and settings rendered once and sent as text (``engine.rendered``) are exactly what composing them
for the connection gives, also where the connection writes literals differently (engine only, no ORM)."""

import psycopg
import pytest
from psycopg import sql

from migrations_runner.engine import apply, history, rendered
from migrations_runner.engine.apply import ApplyOptions, _local_settings, _local_settings_text

pytestmark = pytest.mark.postgres

ROWS = [
    {"version": "1.2", "description": "add invoices", "kind": "SQL", "script": "V1_2__add_invoices.sql"},
    {"version": None, "description": "views", "kind": "REPEATABLE", "script": "R__views.sql"},
    {"version": "3", "description": "it's a \\ back\\slash", "kind": "SQL", "script": "V3__it's.sql"},
    {"version": "4", "description": "données ✓ 日本", "kind": "SQL", "script": "V4__données.sql"},
]


def _row_values(row: dict, execution_id: str | None) -> dict:
    return {**row, "checksum": "c" * 64, "installed_by": "ops's", "execution_id": execution_id}


def _rendered(conn, schema: str, values: dict):
    return history.insert_row_rendered(conn, schema, history.RowValues(**values))


@pytest.mark.parametrize("execution_id", ["2c5f2d43-2f67-4c3e-9b0e-5a1c3f3f2f11", None])
def test_a_rendered_row_is_the_composed_row_as_the_connection_sends_it(pg, execution_id):
    with pg.connect() as conn:
        for row in ROWS:
            values = _row_values(row, execution_id)
            composed = history.insert_row(schema='tenant "q"', execution_time_ms=None, **values)
            for _ in range(2):  # made, then from the cache
                text = _rendered(conn, 'tenant "q"', values)
                assert text.as_string(conn) == composed.as_string(conn)


@pytest.mark.parametrize(
    ("setting", "row"),
    [
        ("SET standard_conforming_strings = off", ROWS[2]),
        ("SET client_encoding = 'LATIN1'", ROWS[3] | {"description": "données"}),
    ],
)
def test_rendered_rows_are_stored_as_written_on_connections_that_read_literals_otherwise(pg, setting, row):
    """Texts are kept per quoting context: a connection where backslashes in literals are escapes, or whose
    client encoding is another, stores the values exactly, alternating with an ordinary connection."""
    values = _row_values(row, None)
    with pg.connect() as plain, pg.connect() as other:
        other.execute(setting)
        assert rendered.quoting_context(plain) != rendered.quoting_context(other)
        plain.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier("tenant_r")))
        plain.execute(sql.SQL(history.CREATE_TABLE).format(table=history.table("tenant_r")))
        for conn in (plain, other, plain, other):
            conn.execute(_rendered(conn, "tenant_r", values))
        stored = plain.execute(
            sql.SQL("SELECT description, script, installed_by FROM {} ORDER BY installed_rank").format(
                history.table("tenant_r")
            )
        ).fetchall()
    assert stored == [(values["description"], values["script"], "ops's")] * 4


ODD_SCHEMAS = ("tenant_a", 'odd "name"', "it's", "back\\slash", "données")


@pytest.mark.parametrize("setting", ["", "SET standard_conforming_strings = off", "SET client_encoding = 'LATIN1'"])
def test_rendered_settings_and_creation_are_the_composed_ones(pg, setting):
    """The settings and the schema's creation a lane sends as text, joined from the schema's names rendered once
    (``schema_texts``), are what composing them for the connection gives, also where it writes literals otherwise;
    and the server reads the search path back as the schema."""
    options = ApplyOptions(installed_by="ops", statement_timeout_s=7, lock_timeout_s=0.25)
    with pg.connect() as conn:
        if setting:
            conn.execute(setting)
        for schema in (*ODD_SCHEMAS, "tenant_a", "Tenant_$9"):
            assert _local_settings_text(conn, schema, options) == _local_settings(schema, options).as_string(conn)
            composed = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}; {}").format(
                sql.Identifier(schema), sql.SQL(history.CREATE_TABLE).format(table=history.table(schema))
            )
            assert history.ensure_text(conn, schema, create_schema=True) == composed.as_string(conn)
            assert history.ensure_text(conn, schema, create_schema=False) == sql.SQL(history.CREATE_TABLE).format(
                table=history.table(schema)
            ).as_string(conn)
            with conn.transaction():
                conn.execute(_local_settings_text(conn, schema, options))
                path = conn.execute("SELECT current_setting('search_path')").fetchone()
            assert path == (f"{sql.Identifier(schema).as_string(conn)}, public",)
        other = ApplyOptions(installed_by="ops", statement_timeout_s=9, lock_timeout_s=0.25)
        assert "'9s'" in _local_settings_text(conn, "tenant_a", other)


def test_the_texts_kept_are_bounded(pg, monkeypatch):
    monkeypatch.setattr(rendered, "_texts", {})
    with pg.connect() as conn:
        for index in range(rendered.RENDERED_MAX + 10):
            text = rendered.rendered_text(conn, ("n", index), lambda index=index: sql.Literal(index))
            assert text == str(index)
        assert len(rendered._texts) <= rendered.RENDERED_MAX
        last = (*rendered.quoting_context(conn), "n", rendered.RENDERED_MAX + 9)
        assert rendered._texts[last] == str(rendered.RENDERED_MAX + 9)


def test_a_made_text_is_kept_per_key(pg, monkeypatch):
    monkeypatch.setattr(rendered, "_texts", {})
    made = []

    def make() -> sql.Composable:
        made.append(1)
        return sql.Literal("x")

    with pg.connect() as conn:
        for _ in range(3):
            assert rendered.rendered(conn, ("k",), make).as_string(conn) == "'x'"
    assert len(made) == 1


def test_the_statements_rendered_once_per_schema_name_their_schema(pg, monkeypatch):
    """The history table, the history read, the unlock and the invalid-index check a lane sends for each target
    are rendered once per schema: alternating schemas on one connection, each statement is its own schema's."""
    monkeypatch.setattr(rendered, "_texts", {})
    schemas = ["tenant_a", 'tenant "b"', "tenant_a", 'tenant "b"']
    with pg.connect() as conn:
        conn.autocommit = True
        for schema, version in (("tenant_a", "1"), ('tenant "b"', "2")):
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            history.ensure(conn, schema, create_schema=False)
            values = _row_values({**ROWS[0], "version": version}, None)
            conn.execute(_rendered(conn, schema, values))
        for schema in schemas:
            assert history.table_text(conn, schema) == history.table(schema).as_string(conn)
            unlock = apply._HeldLock(schema).release_statement(conn)
            assert unlock == sql.SQL("SELECT pg_advisory_unlock({}, hashtext({}))").format(
                sql.Literal(apply.LOCK_NAMESPACE), sql.Literal(schema)
            ).as_string(conn)
            locked, state = history.try_lock_and_read(conn, schema, apply.LOCK_NAMESPACE)
            assert locked
            own, other = ("1", "2") if schema == "tenant_a" else ("2", "1")
            read = {str(v) for v in state.applied}
            assert own in read
            assert other not in read
            conn.execute(unlock)
            held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            assert held.fetchone() == (0,)
            recorded = apply._record_unless_invalid(
                conn,
                schema,
                lambda unless, schema=schema: history.insert_row_of(
                    schema, history.RowValues("9", "x", "SQL", "V9__x.sql", "c", "ops", None), unless=unless
                ),
            )
            assert recorded
        conn.execute(sql.SQL("CREATE TABLE {} (n int)").format(sql.Identifier("tenant_a", "t")))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1), (1)").format(sql.Identifier("tenant_a", "t")))
        with pytest.raises(psycopg.errors.UniqueViolation):  # an invalid index in tenant_a only: a failed build
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY t_n ON {} (n)").format(sql.Identifier("tenant_a", "t"))
            )
        for schema in ('tenant "b"', "tenant_a"):
            row = lambda unless, schema=schema: history.insert_row_of(  # noqa: E731
                schema, history.RowValues("10", "x", "SQL", "V10__x.sql", "c", "ops", None), unless=unless
            )
            assert apply._record_unless_invalid(conn, schema, row) == (schema != "tenant_a")
