"""Reading many schemas' histories at once (``history.read_states``) gives what reading each schema alone gives,
parses each distinct history once, and hands every schema a state of its own (engine only, no ORM)."""

import psycopg
import pytest
from psycopg import sql

from migrations_runner.engine import history
from migrations_runner.engine.apply import LOCK_NAMESPACE
from migrations_runner.engine.sets import Version

pytestmark = pytest.mark.postgres


def _history(conn: psycopg.Connection, schema: str, rows: list[tuple[str | None, str, str, str]]) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL(history.CREATE_TABLE).format(table=history.table(schema)))
    for version, kind, script, checksum in rows:
        conn.execute(
            history.insert_row(
                schema=schema,
                version=version,
                description=script,
                kind=kind,
                script=script,
                checksum=checksum,
                installed_by="t",
                execution_id=None,
                execution_time_ms=1,
            )
        )


ALIKE = [("1", "SQL", "V1__a.sql", "c1"), ("2", "SQL", "V2__b.sql", "c2"), (None, "REPEATABLE", "R__v.sql", "r1")]
# An undone version, a baseline above it, a repeatable changed twice: the order of the rows matters.
OTHER = [
    ("1", "SQL", "V1__a.sql", "c1"),
    ("2", "SQL", "V2__b.sql", "c2"),
    ("2", "UNDO", "U2__b.sql", "u2"),
    ("5", "BASELINE", "<< baseline >>", ""),
    (None, "REPEATABLE", "R__v.sql", "r1"),
    (None, "REPEATABLE", "R__v.sql", "r2"),
]


def _fields(state: history.SchemaState) -> tuple:
    return (
        state.exists,
        state.has_history,
        state.applied,
        state.applied_scripts,
        state.repeatables,
        state.baseline,
        state.undone,
    )


def test_a_bulk_read_equals_reading_each_schema_alone(pg):
    with pg.connect() as conn:
        conn.autocommit = True
        for schema in ("tenant_a", "tenant_b", "tenant_c"):
            _history(conn, schema, ALIKE)
        _history(conn, "tenant_other", OTHER)
        conn.execute("CREATE SCHEMA tenant_bare")  # no history table yet
        # A failed row is not history.
        conn.execute(sql.SQL("UPDATE {} SET success = false WHERE version = '2'").format(history.table("tenant_c")))
        schemas = ["tenant_a", "tenant_b", "tenant_c", "tenant_other", "tenant_bare", "tenant_missing"]

        states = history.read_states(conn, schemas)

        for schema in schemas:
            locked, alone = history.try_lock_and_read(conn, schema, LOCK_NAMESPACE)
            if locked:
                conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_NAMESPACE, schema])
            assert states[schema].schema == schema
            assert _fields(states[schema]) == _fields(alone), schema
    other = states["tenant_other"]
    assert other.undone == {Version.parse("2")}
    assert other.baseline == Version.parse("5")
    assert other.repeatables == {"R__v.sql": "r2"}
    assert str(states["tenant_a"].current) == "2"
    assert str(states["tenant_c"].current) == "1"


def test_equal_histories_share_a_signature_and_not_their_containers(pg):
    with pg.connect() as conn:
        conn.autocommit = True
        for schema in ("tenant_a", "tenant_b"):
            _history(conn, schema, ALIKE)
        _history(conn, "tenant_other", OTHER)
        conn.execute("CREATE SCHEMA tenant_bare")

        states = history.read_states(conn, ["tenant_a", "tenant_b", "tenant_other", "tenant_bare", "tenant_missing"])

    a, b = states["tenant_a"], states["tenant_b"]
    assert a.signature == b.signature
    assert a.signature not in (None, "", states["tenant_other"].signature)
    # Schemas without history carry the empty signature; states the engine builds itself carry none.
    assert states["tenant_bare"].signature == states["tenant_missing"].signature == ""
    assert history.SchemaState("x").signature is None
    a.applied[Version.parse("3")] = "c3"
    a.undone.add(Version.parse("1"))
    assert Version.parse("3") not in b.applied
    assert b.undone == set()
