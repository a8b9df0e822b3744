"""The ``infra_schema_history`` table of each target schema, read in bulk per database.

Rows: ``SQL`` (a forward version), ``UNDO`` (audit of an undone version; the
version's ``SQL`` row is deleted in the same transaction), ``REPEATABLE`` and
``BASELINE`` (the schema was declared to be at a version without running anything:
every version up to it counts as applied, and none of them can be undone).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migrations_runner.engine.rendered import rendered, rendered_text, schema_texts
from migrations_runner.engine.sets import HISTORY_TABLE, Version

TABLE = HISTORY_TABLE
_CHUNK = 100  # schemas per UNION ALL query (measured fastest between 25 and 1000)
# Each schema's successful rows in installed_rank order, as one JSON text: one row per schema to fetch, and
# the same text for every schema with the same history.
_FOLD = sql.SQL(
    "::text, (SELECT json_agg(json_build_array(version, type, script, checksum) ORDER BY installed_rank)::text FROM "
)
_SUCCESS = sql.SQL(" WHERE success)")

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    installed_rank bigserial PRIMARY KEY,
    version text,
    description text NOT NULL,
    type text NOT NULL,
    script text NOT NULL,
    checksum text NOT NULL,
    installed_by text NOT NULL,
    installed_on timestamptz NOT NULL DEFAULT now(),
    execution_time_ms integer NOT NULL,
    success boolean NOT NULL,
    execution_id uuid
)
"""


@dataclass
class SchemaState:
    """What a schema holds: whether it exists, its applied versions, its baseline and repeatable checksums."""

    schema: str
    exists: bool = False
    has_history: bool = False
    applied: dict[Version, str] = field(default_factory=dict)  # version -> checksum
    applied_scripts: dict[Version, str] = field(default_factory=dict)  # version -> script file name
    repeatables: dict[str, str] = field(default_factory=dict)  # script -> latest checksum
    baseline: Version | None = None  # the highest BASELINE row: versions up to it count as applied
    undone: set[Version] = field(default_factory=set)  # versions whose latest row is an UNDO (the schema lacks them)
    # What it was read from, equal for schemas with equal histories ('' for none; None when not known): lets a
    # plan of many schemas work out what is pending once per distinct history.
    signature: str | None = None

    @property
    def current(self) -> Version | None:
        versions = [*self.applied, *([self.baseline] if self.baseline is not None else [])]
        return max(versions) if versions else None

    def below_baseline(self, version: Version) -> bool:
        """Tell whether ``version`` is covered by the baseline (at or below it)."""
        return self.baseline is not None and version <= self.baseline


def table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(TABLE))


def table_text(conn: psycopg.Connection, schema: str) -> str:
    """``table(schema)`` rendered for ``conn`` (the schema's identifier once per schema: ``schema_texts``): a lane
    names it in every statement of a target's history."""
    return f"{schema_texts(conn, schema).identifier}.{_TABLE_IDENTIFIER}"


# The table's own name quoted once: plain ASCII, written alike for every connection.
_TABLE_IDENTIFIER = sql.Identifier(TABLE).as_string(None)


def ensure_text(conn: psycopg.Connection, schema: str, *, create_schema: bool) -> str:
    """The statements that create the schema (when asked) and its history table when missing, as text."""
    create_table = CREATE_TABLE.format(table=table_text(conn, schema))
    if not create_schema:
        return create_table
    return f"CREATE SCHEMA IF NOT EXISTS {schema_texts(conn, schema).identifier}; {create_table}"


def ensure(conn: psycopg.Connection, schema: str, *, create_schema: bool) -> None:
    """Create the schema (when asked) and its history table when missing."""
    conn.execute(ensure_text(conn, schema, create_schema=create_schema))


def exists(conn: psycopg.Connection, schema: str) -> bool:
    """Whether the schema's history table exists."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table_text(conn, schema)]).fetchone()
    return bool(row and row[0])


def read_states(conn: psycopg.Connection, schemas: Iterable[str]) -> dict[str, SchemaState]:
    """Read the history of many schemas of one database in a few queries; changes nothing."""
    wanted = list(dict.fromkeys(schemas))
    states = {schema: SchemaState(schema, signature="") for schema in wanted}
    if not wanted:
        return states
    rows = conn.execute(
        """
        SELECT n.nspname, c.oid IS NOT NULL
        FROM pg_namespace n
        LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = %s AND c.relkind IN ('r', 'p')
        WHERE n.nspname = ANY(%s)
        """,
        [TABLE, wanted],
    ).fetchall()
    with_history = []
    for schema, has_history in rows:
        states[schema].exists = True
        states[schema].has_history = has_history
        if has_history:
            with_history.append(schema)
    folded: dict[str | None, SchemaState] = {}  # one parse per distinct history: fleets are alike
    for start in range(0, len(with_history), _CHUNK):
        chunk = with_history[start : start + _CHUNK]
        query = sql.SQL(" UNION ALL ").join(
            sql.Composed([sql.SQL("SELECT "), sql.Literal(schema), _FOLD, sql.Identifier(schema, TABLE), _SUCCESS])
            for schema in chunk
        )
        for schema, rows in conn.execute(query):
            template = folded.get(rows)
            if template is None:
                template = folded[rows] = SchemaState("", signature=rows or "[]")
                for version, kind, script, checksum in json.loads(rows) if rows else ():
                    _add_row(template, version, kind, script, checksum)
            states[schema] = _copy(template, schema)
    return states


def newest_rows(conn: psycopg.Connection, schema: str, count: int) -> list[tuple[str, str, str, int]]:
    """The schema's ``count`` newest successful history rows, oldest first: type, script, checksum and duration
    (ms). What a round trip of several scripts committed before one of them failed."""
    query = sql.SQL(
        "SELECT type, script, checksum, execution_time_ms FROM {} WHERE success ORDER BY installed_rank DESC LIMIT {}"
    ).format(table(schema), sql.Literal(count))
    return list(reversed(conn.execute(query).fetchall()))


def _copy(template: SchemaState, schema: str) -> SchemaState:
    """A state of ``schema`` with ``template``'s history (its own containers: callers may change them)."""
    return SchemaState(
        schema,
        exists=True,
        has_history=True,
        applied=dict(template.applied),
        applied_scripts=dict(template.applied_scripts),
        repeatables=dict(template.repeatables),
        baseline=template.baseline,
        undone=set(template.undone),
        signature=template.signature,
    )


def _add_row(state: SchemaState, version: str | None, kind: str, script: str, checksum: str) -> None:
    """Fold one successful history row (in ``installed_rank`` order) into ``state``."""
    if kind == "SQL":
        parsed = Version.parse(version or "")
        state.applied[parsed] = checksum
        state.applied_scripts[parsed] = script
        state.undone.discard(parsed)
    elif kind == "UNDO":
        state.undone.add(Version.parse(version or ""))
    elif kind == "REPEATABLE":
        state.repeatables[script] = checksum
    elif kind == "BASELINE":
        parsed = Version.parse(version or "")
        state.baseline = parsed if state.baseline is None else max(state.baseline, parsed)


def unlock(conn: psycopg.Connection, schema: str, lock_namespace: int) -> None:
    """Release the schema's session advisory lock, when the connection can still say so (a broken or closed one
    released it with its session)."""
    if not conn.broken and not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [lock_namespace, schema])


def try_lock_and_read(
    conn: psycopg.Connection, schema: str, lock_namespace: int, *, expect_history: bool = True
) -> tuple[bool, SchemaState]:
    """Try the schema's session advisory lock and read its history in one round trip (a pipeline): whether the
    lock was taken, and the state, read after the lock so nothing committed before it is missed.

    When the lock was not taken the state may be stale: the caller waits for the lock and reads again. On an
    error other than a missing history table the lock is released before the error propagates.

    ``expect_history`` False (a schema the plan found without history): one statement tries the lock and asks
    whether the history table exists, and the history is read only when it does, so a new schema costs no
    failed statement (an error in the server's log for every new tenant).
    """
    if not expect_history:
        locked, exists, has_history = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s)), EXISTS (SELECT FROM pg_namespace WHERE nspname = %s), "
            "to_regclass(%s) IS NOT NULL",
            [lock_namespace, schema, schema, table_text(conn, schema)],
        ).fetchone() or (False, False, False)
        if not has_history:
            return bool(locked), SchemaState(schema, exists=bool(exists), has_history=False)
        if not locked:
            return False, SchemaState(schema, exists=True, has_history=True)  # the caller waits and reads again
        try:
            return True, read_states(conn, [schema])[schema]
        except BaseException:
            unlock(conn, schema, lock_namespace)
            raise
    history_rows = rendered(
        conn,
        ("history-rows", schema),
        lambda: sql.SQL(
            "SELECT version, type, script, checksum FROM {table} WHERE success ORDER BY installed_rank"
        ).format(table=table(schema)),
    )
    lock = conn.cursor()
    rows = conn.cursor()
    has_history = True
    try:
        with conn.pipeline():
            lock.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s)), EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)",
                [lock_namespace, schema, schema],
            )
            rows.execute(history_rows)
    except psycopg.errors.UndefinedTable:
        has_history = False  # the statements before the failed one have their results
    except psycopg.Error:
        answer = lock.fetchone() if lock.pgresult is not None else None
        if answer and answer[0]:
            unlock(conn, schema, lock_namespace)
        raise
    locked, exists = lock.fetchone() or (False, False)
    state = SchemaState(schema, exists=bool(exists), has_history=has_history)
    for version, kind, script, checksum in rows.fetchall() if has_history else ():
        _add_row(state, version, kind, script, checksum)
    return bool(locked), state


# When the script of the transaction started, set in its transaction (``apply._local_timeouts``): the transactions
# of one round trip all began, as far as now() says, when the server received it.
SCRIPT_STARTED = "infra_migrations.script_started"
_SERVER_DURATION = sql.SQL(
    "(extract(epoch FROM clock_timestamp() - coalesce(nullif(current_setting({}, true), '')::timestamptz, now()))"
    " * 1000)::integer"
).format(sql.Literal(SCRIPT_STARTED))
_INSERT = (
    "INSERT INTO {table} (version, description, type, script, checksum, installed_by, execution_time_ms, success, "
    "execution_id) {rows}"
)


@dataclass(frozen=True)
class RowValues:
    """What a history row records of a script run, but its schema and duration."""

    version: str | None
    description: str
    kind: str
    script: str
    checksum: str
    installed_by: str
    execution_id: str | None

    def composed(self, execution_time_ms: int | None) -> sql.Composed:
        """The row's values as literals; the duration ``execution_time_ms``, or (None) the time since the script
        began (``SCRIPT_STARTED``, else since the transaction began)."""
        return sql.SQL(
            "{version}, {description}, {kind}, {script}, {checksum}, {installed_by}, {duration}, true, {execution_id}"
        ).format(
            version=sql.Literal(self.version),
            description=sql.Literal(self.description),
            kind=sql.Literal(self.kind),
            script=sql.Literal(self.script),
            checksum=sql.Literal(self.checksum),
            installed_by=sql.Literal(self.installed_by),
            duration=sql.Literal(execution_time_ms) if execution_time_ms is not None else _SERVER_DURATION,
            execution_id=(
                sql.SQL("{}::uuid").format(sql.Literal(self.execution_id))
                if self.execution_id
                else sql.SQL("NULL::uuid")
            ),
        )


def insert_row(
    *,
    schema: str,
    version: str | None,
    description: str,
    kind: str,
    script: str,
    checksum: str,
    installed_by: str,
    execution_id: str | None,
    execution_time_ms: int | None = None,
    unless: sql.Composable | None = None,
) -> sql.Composed:
    """An INSERT of one history row, composed client-side with literals (no user text in SQL); with ``unless``
    (a query), the row is inserted only when that query returns no row.

    With ``execution_time_ms`` None the duration is the time since the script began (``SCRIPT_STARTED``).
    """
    values = RowValues(version, description, kind, script, checksum, installed_by, execution_id)
    return insert_row_of(schema, values, execution_time_ms=execution_time_ms, unless=unless)


def insert_row_of(
    schema: str, values: RowValues, *, execution_time_ms: int | None = None, unless: sql.Composable | None = None
) -> sql.Composed:
    """``insert_row`` of ``values``."""
    composed = values.composed(execution_time_ms)
    rows = (
        sql.SQL("VALUES ({})").format(composed)
        if unless is None
        else sql.SQL("SELECT {} WHERE NOT EXISTS ({})").format(composed, unless)
    )
    return sql.SQL(_INSERT).format(table=table(schema), rows=rows)


def insert_row_rendered(conn: psycopg.Connection, schema: str, values: RowValues) -> sql.SQL:
    """``insert_row_of`` with the duration taken by the server (a script run in its own transaction), rendered for
    ``conn``: the values once per script and execution, the table once per schema (``rendered``), not for each
    row a lane writes."""
    values_text = rendered_text(conn, ("history-values", values), lambda: values.composed(None))
    return sql.SQL(_INSERT.format(table=table_text(conn, schema), rows=f"VALUES ({values_text})"))
