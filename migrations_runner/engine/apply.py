"""Applying (and undoing) migrations on one target: one (database, schema) pair.

Per target: take a PostgreSQL advisory lock for the schema, read the history,
validate it against the set (drift fails the target before any change), create
the schema and history table when missing, then apply each pending version in
its own transaction together with its history row (``search_path``,
``statement_timeout`` and ``lock_timeout`` set locally). Consecutive
transactional scripts share one round trip (still a transaction and a history
row each) once the connection source has seen them run on the database within
``join_scripts_ms`` in all; a failure among them keeps those committed before
it. Scripts PostgreSQL
refuses inside a transaction run statement by statement in autocommit. Undo
runs the same way, newest version first. Transient errors (lost connection,
55P03, 40001, 40P01, 57P01 and the like) are retried with backoff; ``should_stop``
is asked before each round trip of scripts. A failure records SQLSTATE, message, version and
the failing statement.

Invalid indexes: a ``CREATE INDEX CONCURRENTLY`` that is interrupted (worker
killed, connection lost, unique violation) leaves an INVALID index behind, which
a re-run's ``IF NOT EXISTS`` would skip. So before a non-transactional script
runs, the indexes it creates by name that exist INVALID in the target schema are
dropped (``DROP INDEX CONCURRENTLY``, logged, noted on the applied version), and
after it ran the version is recorded only when the schema holds no invalid
index. The advisory lock keeps our own runs from building in the schema
meanwhile; an unnamed ``CREATE INDEX CONCURRENTLY ON ...`` cannot be matched,
so its leftover fails the target by name for an operator to drop.

Lock guard rails: each script runs with a short ``lock_timeout`` so that no application query waits behind a
migration's lock request for longer than that. A statement that timed out waiting for a table lock rolls its
script back; the target is retried after a backoff with jitter (the holder of the lock named in the log and
on the outcome, from ``pg_locks`` and ``pg_stat_activity``), or handed back to the caller as ``deferred`` so
that other targets run meanwhile, until ``lock_retries`` waits or ``lock_retry_for_s`` seconds are spent: the
target then fails with kind ``lock_timeout`` (Retry failed runs it again once the holder is gone).

``TargetOutcome.status``: ``succeeded``, ``failed``, ``cancelled``, ``deferred`` (a lock wait handed back).

``TargetError.kind``, from the engine: ``sql`` (a statement failed), ``connection``
(no or lost connection), ``lock`` (another run held the migration lock past the
lock wait), ``drift`` (applied history differs from the set), ``invalid_index``
(a non-transactional script left an invalid index in the schema), ``lock_timeout`` (a table lock stayed
held by another session past the lock guard rails' budget), ``placeholder``
(a placeholder value that cannot be put into SQL text safely), ``cancelled``,
``undo_missing``, ``baseline`` (an undo of a version at or below the target's
baseline); from the services around it: ``set_changed`` (the set on disk differs
from the execution's snapshot), ``worker_lost`` (a lane's worker stopped renewing
its lease), ``internal`` (an unexpected exception outside the engine).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import NoReturn, TypedDict

import psycopg
from psycopg import sql

from migrations_runner.engine import history
from migrations_runner.engine.rendered import rendered_text, schema_texts
from migrations_runner.engine.sets import MigrationSet, PlaceholderValueError, Script, Version
from migrations_runner.engine.sqltext import SqlSyntaxError, created_concurrent_indexes, split_statements

logger = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x1F0A  # first key of the two-int advisory lock; the second is hashtext(schema)
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout: the statement waited too long for a lock another session holds
LOCK_BACKOFF_MAX_S = 5.0  # a blocked target is tried again within about 5 s of its lock being free
TRANSIENT_SQLSTATES = {"55P03", "40001", "40P01", "57P01", "57P02", "57P03", "53300"}
NO_REPLAY_SQLSTATES = {"57014"}  # a statement that timed out would only time out again


UNCONFIRMED = "unconfirmed"


class TransientError(Exception):
    """A failure worth retrying (lock wait, serialization, deadlock, lost connection)."""

    def __init__(self, error: TargetError) -> None:
        super().__init__(error.message)
        self.error = error


class _Failed(Exception):
    """A failure that ends the target (or, with kind ``cancelled``, a stop on request)."""

    def __init__(self, error: TargetError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class TargetError:
    kind: str  # see the module docstring for every kind
    message: str
    sqlstate: str = ""
    version: str = ""
    script: str = ""
    statement: str = ""
    statement_index: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class _ScriptContext(TypedDict):
    """The fields that every error and log line about one script carries."""

    version: str
    script: str


@dataclass
class AppliedVersion:
    version: str
    description: str
    script: str
    duration_ms: int
    kind: str = "SQL"  # SQL | REPEATABLE | UNDO
    notes: list[str] = field(default_factory=list)  # what the engine did besides the script (dropped indexes)


@dataclass
class TargetOutcome:
    status: str  # succeeded | failed | cancelled | unconfirmed (``ApplyOptions.may_write`` said no: nothing ran)
    from_version: str = ""
    to_version: str = ""
    applied: list[AppliedVersion] = field(default_factory=list)
    attempts: int = 0
    error: TargetError | None = None
    callbacks: list[str] = field(default_factory=list)  # the callbacks run, as "event: script"
    lock_attempts: int = 0  # lock waits of this target run so far (earlier claims included)
    lock_wait: str = ""  # the latest: who held the lock
    retry_after_s: float | None = None  # a deferred outcome: try again after this long
    # Whether a statement ever ran on the target's database: a target never reached changed nothing there.
    reached: bool = False


@dataclass
class TargetSpec:
    """Where and as what a target is migrated."""

    schema: str
    create_schema: bool
    context: dict[str, str]
    label: str = ""
    # False when the plan found no history table in the schema (a new tenant): its history is then read only
    # after a check that the table exists (``history.try_lock_and_read``). A wrong guess costs a round trip.
    expect_history: bool = True


@dataclass
class ApplyOptions:
    installed_by: str
    execution_id: str | None = None
    statement_timeout_s: int = 300
    lock_timeout_s: float = 10.0
    lock_wait_s: float = 60.0
    retry_attempts: int = 3
    retry_backoff_s: float = 0.5
    out_of_order: bool = False  # apply pending versions below the highest applied one (else refuse the target)
    should_stop: Callable[[], bool] = lambda: False
    # Consecutive transactional scripts that took this many milliseconds in all when they last ran on the
    # database go in one round trip, each in its own transaction with its history row; 0: one round trip a script.
    join_scripts_ms: int = 250
    # Lock guard rails: a statement waits at most lock_timeout_s for a table lock; the script is then retried
    # after a backoff with jitter, up to lock_retries waits or lock_retry_for_s seconds in all (counting the
    # waits of earlier claims of the same target run, lock_attempts_before since lock_blocked_since).
    lock_retries: int = 60
    lock_retry_for_s: float = 900.0
    lock_backoff_s: float = 0.5
    lock_attempts_before: int = 0
    lock_blocked_since: float | None = None  # epoch seconds of the first wait
    # Asked after a lock wait: True hands the target back (outcome "deferred") instead of sleeping here, so
    # the caller can run other targets meanwhile.
    defer_lock_wait: Callable[[], bool] = lambda: False
    on_lock_wait: Callable[[str], None] = lambda message: None
    # Asked once, with the schema's lock taken and its history read, before anything is written there: False
    # leaves the target as it was (outcome "unconfirmed"). A caller that is still confirming its claim of the
    # target (its lane records the run before while this one reads) answers when that is settled.
    may_write: Callable[[], bool] = lambda: True


class ConnectionSource:
    """Hands out one live connection to a database and replaces it after it broke; remembers how long each script
    took there the last time it ran (what decides which scripts share a round trip: ``join_scripts_ms``)."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self.script_ms: dict[tuple[str, str], int] = {}  # (file name, checksum) -> milliseconds

    def get(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = self._connect()
            conn.autocommit = True
            if conn.info.server_version >= 140000:
                # If this process dies mid-script, the server notices within a second and rolls the script
                # back, instead of running on (and perhaps committing) for a client that is gone.
                conn.execute("SELECT set_config('client_connection_check_interval', '1s', false)")
            self._conn = conn
        return self._conn

    @property
    def broken(self) -> bool:
        return self._conn is not None and self._conn.broken

    def discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    close = discard


def _is_transient(exc: psycopg.Error) -> bool:
    state = exc.sqlstate or ""
    lost_connection = isinstance(exc, psycopg.OperationalError) and not state
    return state in TRANSIENT_SQLSTATES or state.startswith("08") or lost_connection


def _sql_error(exc: psycopg.Error, **context) -> TargetError:
    message = (exc.diag.message_primary or str(exc)).strip()
    kind = "connection" if not exc.sqlstate else "sql"
    return TargetError(kind=kind, message=message, sqlstate=exc.sqlstate or "", **context)


def _lock(conn: psycopg.Connection, schema: str, options: ApplyOptions) -> None:
    """Take the schema's migration lock, waiting at most ``lock_wait_s``; any failure is transient."""
    try:
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false), pg_advisory_lock(%s, hashtext(%s))",
            [f"{int(options.lock_wait_s * 1000)}ms", LOCK_NAMESPACE, schema],
        )
    except psycopg.Error as exc:
        error = _sql_error(exc)
        if exc.sqlstate == "55P03":
            error.kind = "lock"
            error.message = f"another run holds the migration lock of schema {schema}"
        raise TransientError(error) from exc
    finally:
        if not conn.broken:
            conn.execute("SELECT set_config('lock_timeout', '0', false)")


def _unlock(conn: psycopg.Connection, schema: str) -> None:
    history.unlock(conn, schema, LOCK_NAMESPACE)


def _lock_and_read(
    conn: psycopg.Connection, schema: str, options: ApplyOptions, *, expect_history: bool = True
) -> history.SchemaState:
    """Take the schema's migration lock and read its history: one round trip when the lock is free (a fleet's
    usual target), else the waiting lock then a fresh read."""
    locked, state = history.try_lock_and_read(conn, schema, LOCK_NAMESPACE, expect_history=expect_history)
    if locked:
        return state
    _lock(conn, schema, options)
    try:
        return history.read_states(conn, [schema])[schema]
    except BaseException:
        _unlock(conn, schema)
        raise


def _local_settings(schema: str, options: ApplyOptions) -> sql.Composed:
    return sql.SQL("SELECT set_config('search_path', {path}, true), {timeouts}").format(
        path=sql.Literal(sql.Identifier(schema).as_string(None) + ", public"), timeouts=_local_timeouts(options)
    )


def _local_settings_text(conn: psycopg.Connection, schema: str, options: ApplyOptions) -> str:
    """``_local_settings`` as text for ``conn`` (every script of a target sends it): the timeouts' part rendered
    once per timeouts, the schema's names once per schema (``schema_texts``)."""
    key = ("local-timeouts", options.statement_timeout_s, options.lock_timeout_s)
    timeouts = rendered_text(conn, key, lambda: _local_timeouts(options))
    return f"SELECT set_config('search_path', {schema_texts(conn, schema).search_path}, true), {timeouts}"


def _local_timeouts(options: ApplyOptions) -> sql.Composed:
    """The script's timeouts, and when it started (``history.SCRIPT_STARTED``, what its row's duration counts
    from: several scripts of one round trip all have its start as ``now()``)."""
    return sql.SQL(
        "set_config('statement_timeout', {st}, true), set_config('lock_timeout', {lt}, true), "
        "set_config({started}, clock_timestamp()::text, true)"
    ).format(
        st=sql.Literal(f"{options.statement_timeout_s}s"),
        lt=sql.Literal(f"{int(options.lock_timeout_s * 1000)}ms"),
        started=sql.Literal(history.SCRIPT_STARTED),
    )


def _locate_failure(conn: psycopg.Connection, spec: TargetSpec, text: str, options: ApplyOptions) -> tuple[int, str]:
    """Replay a failed transactional script statement by statement (rolled back) to find the failing one."""
    try:
        statements = split_statements(text)
    except SqlSyntaxError:
        return -1, ""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(_local_settings(spec.schema, options))
            for index, statement in enumerate(statements):
                try:
                    conn.execute(statement)
                except psycopg.Error:
                    return index, statement
    except psycopg.Error:
        pass
    return -1, ""


# The INVALID indexes of a schema (%(schema)s). Partitioned indexes (relkind ``I``) are left out: one is invalid
# while a partition lacks its index, a state built on purpose with ``CREATE INDEX ... ON ONLY``, not the leftover of
# a failed build. Each query reads the schema's own rows by key, so its cost follows the schema, not the database:
# no index of pg_index leads with indisvalid, and filtering all of it took 1.7 ms a check at 1,000 tenants of the
# shipped set (24,000 indexes), for each target with a concurrent build, growing with the fleet.
# All of them: the schema's relations (pg_depend's index on the schema; an index lives in its table's schema) and
# their indexes (pg_index's on the table).
_INVALID_INDEXES = """
    SELECT c.relname
    FROM pg_depend d
    JOIN pg_index i ON i.indrelid = d.objid
    JOIN pg_class c ON c.oid = i.indexrelid
    WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjsubid = 0 AND d.classid = 'pg_class'::regclass
      AND d.deptype = 'n' AND d.refobjid = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = %(schema)s)
      AND c.relkind = 'i' AND NOT i.indisvalid
"""

# Those among %(names)s: by name in the schema (pg_class's index on name and schema), each one's pg_index row by its
# key in a scalar subquery (joined, a plan could read all of pg_index first).
_INVALID_INDEXES_NAMED = """
    SELECT c.relname
    FROM pg_class c
    WHERE c.relnamespace = (SELECT n.oid FROM pg_namespace n WHERE n.nspname = %(schema)s)
      AND c.relname = ANY(%(names)s::text[]) AND c.relkind = 'i'
      AND NOT (SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = c.oid)
"""


def invalid_indexes(conn: psycopg.Connection, schema: str, names: list[str] | None = None) -> list[str]:
    """Return the INVALID indexes of ``schema`` (only among ``names`` when given), sorted by name."""
    query = _INVALID_INDEXES if names is None else _INVALID_INDEXES_NAMED
    rows = conn.execute(query + " ORDER BY 1", {"schema": schema, "names": names})
    return [name for (name,) in rows]


def _session_settings_and_invalid(
    conn: psycopg.Connection, schema: str, options: ApplyOptions, names: list[str]
) -> list[str]:
    """Set the session's search path and statement timeout for a script run outside a transaction, and return
    which of ``names`` are INVALID indexes of ``schema`` (left by an interrupted build): one round trip."""
    row = conn.execute(
        "SELECT set_config('search_path', %(path)s, false), set_config('statement_timeout', %(timeout)s, false), "
        f"ARRAY({_INVALID_INDEXES_NAMED} ORDER BY 1)",
        {
            "path": sql.Identifier(schema).as_string(None) + ", public",
            "timeout": f"{options.statement_timeout_s}s",
            "schema": schema,
            "names": names,
        },
    ).fetchone()
    assert row is not None
    return list(row[2])


def _record_unless_invalid(conn: psycopg.Connection, schema: str, row: Callable[..., sql.SQL | sql.Composed]) -> bool:
    """Insert the history row (``row(unless=...)``) unless ``schema`` holds an INVALID index, and reset the
    session's settings: one round trip. Whether the row was inserted."""
    # All of them, written with the schema's literal as the connection quotes it (``schema_texts``).
    invalid = sql.SQL(_INVALID_INDEXES.replace("%(schema)s", schema_texts(conn, schema).literal))
    cursor = conn.execute(
        sql.SQL("{insert}; RESET search_path; RESET statement_timeout").format(insert=row(unless=invalid))
    )
    return cursor.rowcount == 1


def _render(script: Script, spec: TargetSpec, context: _ScriptContext) -> str:
    try:
        return script.render(spec.context)
    except PlaceholderValueError as exc:
        raise _Failed(TargetError(kind="placeholder", message=str(exc), **context)) from exc


def _statements(text: str, context: _ScriptContext) -> list[str]:
    try:
        return split_statements(text)
    except SqlSyntaxError as exc:
        raise _Failed(TargetError(kind="sql", message=f"{context['script']}: {exc}", **context)) from exc


def _run_script(
    conn: psycopg.Connection,
    spec: TargetSpec,
    script: Script,
    kind: str,
    row: Callable[..., sql.SQL | sql.Composed],
    options: ApplyOptions,
    around: tuple[list[Script], list[Script]] = ([], []),
    *,
    guarded: bool = False,
) -> AppliedVersion:
    """Run one script PostgreSQL refuses inside a transaction, statement by statement, with its history row, between
    its ``beforeEachMigrate`` and ``afterEachMigrate`` callbacks (``around``); transactional scripts go through
    ``_run_joined``. ``guarded``: ``row`` takes ``unless`` (``history.insert_row``'s), so the script records its
    row in the round trip that checks for invalid indexes. Raises _Failed / TransientError."""
    context: _ScriptContext = {"version": str(script.version or ""), "script": script.filename}
    text = _render(script, spec, context)
    before, after = ([_render(c, spec, context) for c in group] for group in around)
    started = time.perf_counter()
    applied = AppliedVersion(context["version"], script.description, script.filename, 0, kind)

    def execute(statement: str | sql.Composed, index: int | None) -> None:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            shown = statement if isinstance(statement, str) else statement.as_string(conn)
            error = _sql_error(exc, statement=shown, statement_index=index, **context)
            raise (TransientError(error) if _is_transient(exc) else _Failed(error)) from exc

    statements = _statements(text, context)
    # An interrupted build of an index this script creates left it INVALID; IF NOT EXISTS would keep it.
    concurrent = created_concurrent_indexes(text, spec.schema)
    leftovers = _session_settings_and_invalid(conn, spec.schema, options, concurrent)
    reset = False
    try:
        if before:
            for callback in before:
                execute(callback, None)
            leftovers = invalid_indexes(conn, spec.schema, concurrent)  # as the callbacks left them
        for name in leftovers:
            logger.warning(
                "dropping an invalid index left by an interrupted build",
                extra={"target": spec.label, "index": f"{spec.schema}.{name}", **context},
            )
            execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(spec.schema, name)), None)
            applied.notes.append(f"dropped invalid index {spec.schema}.{name} left by an interrupted build")
        for index, statement in enumerate(statements):
            execute(statement, index)

        def refuse_invalid(invalid: list[str]) -> None:
            if invalid:
                raise _Failed(
                    TargetError(
                        kind="invalid_index",
                        message=f"schema {spec.schema} holds invalid index(es) after {script.filename}: "
                        f"{', '.join(invalid)} (a concurrent build failed or was interrupted); not recorded in the "
                        "history: drop them with DROP INDEX CONCURRENTLY and retry",
                        **context,
                    )
                )

        if after or not guarded:
            refuse_invalid(invalid_indexes(conn, spec.schema))
            for callback in after:
                execute(callback, None)
            applied.duration_ms = int((time.perf_counter() - started) * 1000)
            conn.execute(row(applied.duration_ms))
        else:
            # The usual script: the check, the history row and the settings' reset in one round trip.
            applied.duration_ms = int((time.perf_counter() - started) * 1000)
            recorded = _record_unless_invalid(conn, spec.schema, functools.partial(row, applied.duration_ms))
            reset = True
            if not recorded:
                refuse_invalid(invalid_indexes(conn, spec.schema))
                conn.execute(row(applied.duration_ms))  # the invalid index went meanwhile
    finally:
        if not reset and not conn.broken:
            conn.execute("RESET search_path; RESET statement_timeout")
    return applied


def _rolled_back(conn: psycopg.Connection, spec: TargetSpec, exc: psycopg.Error, create: str) -> None:
    """End the transaction a failed round trip of transactional scripts left open; re-raise ``exc`` when it was
    the round trip's creation of the schema and history table (``create``) that failed, not a script."""
    if not conn.broken:
        conn.execute("ROLLBACK")
        if create and not history.exists(conn, spec.schema):
            raise exc  # the creation failed, not the script (which never ran)


def _script_failed(
    conn: psycopg.Connection,
    spec: TargetSpec,
    exc: psycopg.Error,
    text: str,
    context: _ScriptContext,
    options: ApplyOptions,
) -> NoReturn:
    """Raise what the failure ``exc`` of the transactional script ``text`` (rolled back) means: a TransientError
    to retry, else _Failed with the failing statement (replayed to find it, unless it timed out)."""
    error = _sql_error(exc, **context)
    if _is_transient(exc):
        raise TransientError(error) from exc
    if exc.sqlstate not in NO_REPLAY_SQLSTATES:
        index, statement = _locate_failure(conn, spec, text, options)
        if index >= 0:
            error.statement_index, error.statement = index, statement
    raise _Failed(error) from exc


# What each history row of a joined round trip returns: the script's duration as the server measured it.
_RECORDED = " RETURNING execution_time_ms AS infra_recorded_ms"
_RECORDED_FIELD = b"infra_recorded_ms"


@dataclass(frozen=True)
class _Joined:
    """A transactional script of a round trip (``_run_joined``): its history row's kind, checksum and row (rendered)."""

    script: Script
    kind: str
    checksum: str
    row: str

    @property
    def context(self) -> _ScriptContext:
        return {"version": str(self.script.version or ""), "script": self.script.filename}

    def applied(self, duration_ms: int) -> AppliedVersion:
        script = self.script
        return AppliedVersion(str(script.version or ""), script.description, script.filename, duration_ms, self.kind)


def _joined_end(pending: list[Script], start: int, seen: Mapping[tuple[str, str], int], budget_ms: int) -> int:
    """Where the round trip of ``pending[start]`` ends (exclusive): the transactional scripts after it join while
    each of them was seen on the database (``seen``: ``ConnectionSource.script_ms``) and they took ``budget_ms``
    in all there, so that a stop asked for (cancel) waits about that long at most. A script not seen yet runs
    on its own: the first target of a lane measures what the others join."""
    first = pending[start]
    total = seen.get((first.filename, first.checksum))
    end = start + 1
    if not first.transactional or total is None or budget_ms <= 0:
        return end
    while end < len(pending) and pending[end].transactional:
        took = seen.get((pending[end].filename, pending[end].checksum))
        if took is None or total + took > budget_ms:
            break
        total += took
        end += 1
    return end


def _recorded_ms(cursor: psycopg.Cursor) -> list[int]:
    """The durations a joined round trip's history rows returned (``_RECORDED``), in order, from its results."""
    found = []
    while True:
        result = cursor.pgresult
        if result is not None and result.nfields == 1 and result.fname(0) == _RECORDED_FIELD:
            value = result.get_value(0, 0)
            found.append(int(value) if value is not None else 0)
        if not cursor.nextset():
            return found


def _committed(conn: psycopg.Connection, schema: str, items: list[_Joined]) -> list[tuple[_Joined, int]]:
    """Which of ``items`` (a joined round trip's scripts, in order) committed before it failed, with the durations
    their rows recorded: the longest run of them from the first that the schema's newest history rows are (the
    schema's migration lock keeps other runs from writing rows meanwhile)."""
    rows = history.newest_rows(conn, schema, len(items))
    for count in range(len(rows), 0, -1):
        tail = rows[len(rows) - count :]
        if all(
            (kind, name, checksum) == (item.kind, item.script.filename, item.checksum)
            for (kind, name, checksum, _), item in zip(tail, items, strict=False)
        ):
            return [(item, duration) for item, (*_, duration) in zip(items, tail, strict=False)]
    return []


def _run_joined(
    conn: psycopg.Connection,
    spec: TargetSpec,
    items: list[_Joined],
    options: ApplyOptions,
    around: tuple[list[Script], list[Script]],
    done: Callable[[_Joined, int], None],
    *,
    release: _HeldLock | None = None,
    create: str = "",
    guard: _HeldLock | None = None,
) -> None:
    """Run transactional scripts (one, or consecutive ones: ``_joined_end``) in one round trip, each in its own
    transaction with its settings, callbacks (``around``) and history row. When a statement fails the server skips
    the rest (the later scripts, their rows and COMMITs included) and we roll back. ``done`` gets each script that
    committed with its duration, in order, also those before a script that failed; the failure raises _Failed /
    TransientError (psycopg.Error when the creation failed). ``release``: the target's last script is among them:
    the schema's lock is released in the same round trip, after the last COMMIT. ``create``: a new schema: the
    schema and history table (``history.ensure_text``), created and committed before the first transaction.
    ``guard``: the schema's lock, not taken yet (``_HeldLock.guard``): the round trip begins by taking it, and
    raises _GuardStopped when that stopped it."""
    # Joined as text: its pieces are rendered already (the settings, the rows and the unlock once per schema or
    # script), and composing them again would cost more than the rest of the lane's work on a script.
    parts = ["BEGIN", create, "COMMIT"] if create else []
    texts = []
    for item in items:
        context = item.context
        texts.append(_render(item.script, spec, context))
        before, after = ([_render(c, spec, context) for c in group] for group in around)
        settings = _local_settings_text(conn, spec.schema, options)
        parts += ["BEGIN", settings, *before, texts[-1], *after, item.row + _RECORDED, "COMMIT"]
    if release is not None:
        parts.append(release.release_statement(conn))
    guarded = guard if guard is not None and guard.guard else None  # the lock this round trip takes first
    if guarded is not None:
        parts.insert(0, guarded.guard_statement(conn))
    try:
        cursor = conn.execute(";\n".join(parts))
    except psycopg.Error as exc:
        if guarded is not None:
            guarded.guard = False
            stopped = _guard_stopped(exc)
            guarded.held = stopped.held if stopped is not None else True  # past the guard, the lock is taken
            if stopped is not None:
                raise stopped from exc
        _rolled_back(conn, spec, exc, create)
        committed = _committed(conn, spec.schema, items) if not conn.broken else []
        for item, duration in committed:
            done(item, duration)
        failed = len(committed) if not conn.broken else 0
        if failed == len(items):  # every script committed: the unlock after them failed (the lock is still held)
            raise TransientError(_sql_error(exc, **items[-1].context)) from exc
        _script_failed(conn, spec, exc, texts[failed], items[failed].context, options)
    if guarded is not None:
        guarded.guard, guarded.held = False, True
    if release is not None:
        release.held = False
    durations = _recorded_ms(cursor)
    # One row a script; the scripts' own results name no such column (else the last ones are the rows').
    for item, duration in zip(items, durations[len(durations) - len(items) :], strict=True):
        done(item, duration)


def _run_callback(conn: psycopg.Connection, spec: TargetSpec, script: Script, options: ApplyOptions) -> None:
    """Run one migrate-level callback (``beforeMigrate``, ``afterMigrate``...) on its own, recording nothing."""
    context: _ScriptContext = {"version": "", "script": script.filename}
    text = _render(script, spec, context)
    statements = [text] if script.transactional else _statements(text, context)
    try:
        if script.transactional:
            conn.execute(sql.SQL(";\n").join([sql.SQL("BEGIN"), _local_settings(spec.schema, options), sql.SQL(text)]))
            conn.execute("COMMIT")
            return
        conn.execute("SELECT set_config('search_path', %s, false)", [sql.Identifier(spec.schema).as_string(None)])
        for statement in statements:
            conn.execute(statement)
    except psycopg.Error as exc:
        if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        error = _sql_error(exc, **context)
        error.kind = "callback" if error.kind == "sql" else error.kind
        error.message = f"{script.event} callback {script.filename}: {error.message}"
        raise (TransientError(error) if _is_transient(exc) else _Failed(error)) from exc
    finally:
        if not script.transactional and not conn.broken:
            conn.execute("RESET search_path")


def drift_of(state: history.SchemaState, mset: MigrationSet) -> list[str]:
    """Return a description of each applied version that is missing from the set or has another checksum."""
    scripts = mset.by_version()
    problems = []
    for version, checksum in sorted(state.applied.items()):
        script = scripts.get(version)
        if script is None:
            problems.append(f"version {version} is applied but not in the set")
        elif script.checksum != checksum:
            problems.append(f"version {version} ({script.filename}) was changed after it was applied")
    return problems


def pending_of(
    state: history.SchemaState, mset: MigrationSet, context: Mapping[str, str] | None = None
) -> list[Script]:
    """Return the versioned scripts not yet applied (nor covered by a baseline), then the repeatables whose
    checksum for this target (``context``: its placeholder values) differs from the one recorded."""
    versions = [
        script
        for script in mset.versions
        if script.version not in state.applied and not state.below_baseline(script.require_version())
    ]
    repeatables = [s for s in mset.repeatables if state.repeatables.get(s.filename) != s.checksum_for(context)]
    return versions + repeatables


def out_of_order_of(state: history.SchemaState, pending: list[Script]) -> list[Script]:
    """The pending versions below the highest applied one (added after later versions ran)."""
    applied = max(state.applied, default=None)
    return [s for s in pending if s.version is not None and applied is not None and s.version < applied]


def _stop_point(options: ApplyOptions, script: Script) -> None:
    if options.should_stop():
        raise _Failed(TargetError(kind="cancelled", message="cancelled before " + script.filename))


@dataclass
class _HeldLock:
    """The schema's migration lock an attempt holds; ``held`` turns False when a script's round trip released it.

    ``guard``: the lock is not taken yet. The target is a new schema (the plan found no history there), and its
    first round trip (the schema's creation and its first scripts) begins by taking it: ``guard_statement``.
    """

    schema: str
    held: bool = True
    guard: bool = False

    def release_statement(self, conn: psycopg.Connection) -> str:
        """The unlock, to end a script's round trip after its COMMIT (it runs only when everything before did),
        as text for ``conn`` (the schema's literal: ``schema_texts``)."""
        return f"SELECT pg_advisory_unlock({LOCK_NAMESPACE:d}, hashtext({schema_texts(conn, self.schema).literal}))"

    def guard_statement(self, conn: psycopg.Connection) -> str:
        """The first statement of a new schema's first round trip: take the lock, and fail (so that the server
        skips the rest of the round trip) when it is taken by another session or when the schema has a history
        table after all. The failure is a cast of one of the ``_GUARD_*`` words, which says which it was."""
        schema = schema_texts(conn, self.schema).literal
        table = sql.Literal(history.table_text(conn, self.schema)).as_string(conn)
        return (
            f"SELECT CAST(CASE WHEN NOT pg_try_advisory_lock({LOCK_NAMESPACE:d}, hashtext({schema})) "
            f"THEN '{_GUARD_BUSY}' WHEN to_regclass({table}) IS NOT NULL THEN '{_GUARD_HISTORY}' ELSE '0' END "
            "AS integer)"
        )


# What a new schema's guard says when it stops its first round trip (``_HeldLock.guard_statement``).
_GUARD_BUSY = "infra-migrations: lock held by another session"
_GUARD_HISTORY = "infra-migrations: history table exists"


class _GuardStopped(Exception):
    """A new schema's first round trip stopped at its guard: nothing ran; ``held``: the lock was taken (the schema
    has a history table after all)."""

    def __init__(self, *, held: bool) -> None:
        super().__init__("guard stopped")
        self.held = held


def _guard_stopped(exc: psycopg.Error) -> _GuardStopped | None:
    if exc.sqlstate != "22P02":  # invalid_text_representation: the guard's cast
        return None
    message = str(exc)
    if _GUARD_BUSY in message:
        return _GuardStopped(held=False)
    if _GUARD_HISTORY in message:
        return _GuardStopped(held=True)
    return None


_Work = Callable[[psycopg.Connection, history.SchemaState, TargetOutcome, _HeldLock], None]


def _run(
    source: ConnectionSource, spec: TargetSpec, options: ApplyOptions, work: _Work, *, new_schema: bool = False
) -> TargetOutcome:
    """Run ``work`` on the target under its migration lock, retrying transient failures with backoff.

    Each attempt re-reads the history, so what an earlier attempt committed is not run again. A statement that
    waited ``lock_timeout`` for a table lock is retried apart (see ``_lock_wait``): after a backoff with jitter,
    up to ``lock_retries`` attempts or ``lock_retry_for_s`` seconds, or handed back to the caller as
    ``deferred`` when it has other work. Never raises for database errors.

    ``new_schema``: ``work``'s first round trip creates the schema and its history table (the plan found none):
    the first attempt takes the lock in that round trip (``_HeldLock.guard``) instead of reading first. When the
    lock is taken by another session, or the history exists after all, nothing ran and the attempt starts again
    the usual way: lock, history, work.
    """
    outcome = TargetOutcome(status="failed", lock_attempts=options.lock_attempts_before)
    state_read = confirmed = False
    attempt = 0
    while True:
        attempt += 1
        outcome.attempts = attempt
        lock_wait = False
        try:
            conn = source.get()
            if new_schema:  # the first attempt only: a retry reads what it committed
                state, lock = history.SchemaState(spec.schema), _HeldLock(spec.schema, held=False, guard=True)
                new_schema = False
            else:
                state = _lock_and_read(conn, spec.schema, options, expect_history=spec.expect_history)
                lock = _HeldLock(spec.schema)
            outcome.reached = True
            try:
                if not confirmed:
                    if not options.may_write():
                        raise _Failed(TargetError(kind=UNCONFIRMED, message="the run was not confirmed; nothing ran"))
                    confirmed = True
                if not state_read:
                    outcome.from_version, state_read = str(state.current or ""), True
                outcome.to_version = str(state.current or "")
                work(conn, state, outcome, lock)
            finally:
                try:
                    if lock.held:
                        _unlock(conn, spec.schema)
                except psycopg.Error:
                    source.discard()
        except _GuardStopped:
            new_schema, attempt, state_read = False, attempt - 1, False  # nothing ran: again, the usual way
            continue
        except _Failed as exc:
            outcome.error = exc.error
            if exc.error.kind == UNCONFIRMED:
                outcome.status = UNCONFIRMED  # not this caller's target (any more): no outcome to report
                return outcome
            outcome.status = "cancelled" if exc.error.kind == "cancelled" else "failed"
            return _finish(outcome, spec)
        except TransientError as exc:
            outcome.error, retry = exc.error, True
            lock_wait = exc.error.sqlstate == LOCK_NOT_AVAILABLE and exc.error.kind == "sql" and not source.broken
            if lock_wait:
                delay = _lock_wait(source.get(), spec, options, outcome)
                if delay is None:
                    return _finish(outcome, spec)
                if options.defer_lock_wait():
                    outcome.status, outcome.retry_after_s = "deferred", delay
                    return _finish(outcome, spec)
                attempt -= 1  # lock waits have their own budget
                time.sleep(delay)
                continue
            if exc.error.kind == "connection" or source.broken:
                source.discard()
        except psycopg.Error as exc:  # outside a script: connecting, reading or creating the history
            source.discard()
            outcome.error, retry = _sql_error(exc), _is_transient(exc)
        else:
            outcome.status, outcome.error = "succeeded", None
            return _finish(outcome, spec)
        if not retry or attempt > options.retry_attempts:
            break
        delay = options.retry_backoff_s * 2 ** (attempt - 1)
        logger.warning(
            "transient failure, retrying",
            extra={
                "target": spec.label,
                "attempt": attempt,
                "sqlstate": outcome.error.sqlstate,
                "delay_s": delay,
                "error": outcome.error.message,
            },
        )
        time.sleep(delay)
    return _finish(outcome, spec)


BLOCKERS_QUERY = """
SELECT a.pid, string_agg(DISTINCT n.nspname || '.' || c.relname, ', '),
       to_char(coalesce(a.xact_start, a.query_start), 'HH24:MI:SS'), a.state,
       left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 200)
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_backend_pid() AND n.nspname = %s AND c.relkind IN ('r', 'p', 'm')
GROUP BY a.pid, a.xact_start, a.query_start, a.state, a.query
ORDER BY a.xact_start NULLS LAST, a.pid
LIMIT 3
"""


def blockers(conn: psycopg.Connection, schema: str) -> str:
    """Who holds locks on the tables of ``schema``, in a sentence ('' when nobody, or when it cannot be read)."""
    try:
        rows = conn.execute(BLOCKERS_QUERY, [schema]).fetchall()
    except psycopg.Error:
        return ""
    parts = []
    for pid, relations, since, state, query in rows:
        if not query or query.startswith("<insufficient"):
            parts.append(f"{relations} held by pid {pid} (its query is hidden: the role may not read other sessions)")
            continue
        parts.append(f"{relations} held by pid {pid} since {since} ({state}), query: {query}")
    return "waiting for a lock on " + "; ".join(parts) if parts else ""


def _lock_wait(
    conn: psycopg.Connection, spec: TargetSpec, options: ApplyOptions, outcome: TargetOutcome
) -> float | None:
    """Count one lock wait of the target and say who blocks it; return the pause before the next attempt, or
    None when the budget is spent (the outcome is then the final ``lock_timeout`` failure)."""
    now = time.time()
    if options.lock_blocked_since is None:
        options.lock_blocked_since = now
    outcome.lock_attempts += 1
    error = outcome.error
    assert error is not None
    holder = blockers(conn, spec.schema) or "the lock holder could not be read"
    waited = now - options.lock_blocked_since
    outcome.lock_wait = f"attempt {outcome.lock_attempts}: {holder}"
    options.on_lock_wait(outcome.lock_wait)
    if outcome.lock_attempts >= options.lock_retries or waited >= options.lock_retry_for_s:
        error.kind = "lock_timeout"
        error.message = (
            f"gave up after {outcome.lock_attempts} lock wait(s) of {options.lock_timeout_s:g} s over {waited:.0f} s: "
            f"{holder} (retry it with Retry failed once the lock holder is gone)"
        )
        return None
    base = min(options.lock_backoff_s * 2 ** min(outcome.lock_attempts - 1, 10), LOCK_BACKOFF_MAX_S)
    delay = min(base * random.uniform(0.5, 1.5), max(options.lock_retry_for_s - waited, 0.05))  # noqa: S311
    logger.warning(
        "waiting for a table lock, retrying",
        extra={
            "target": spec.label,
            "lock_attempt": outcome.lock_attempts,
            "delay_s": round(delay, 2),
            "version": error.version,
            "blocker": holder,
        },
    )
    return delay


def _finish(outcome: TargetOutcome, spec: TargetSpec) -> TargetOutcome:
    log = logger.info if outcome.status == "succeeded" else logger.warning
    error = outcome.error
    log(
        "target finished",
        extra={
            "target": spec.label,
            "status": outcome.status,
            "from_version": outcome.from_version,
            "to_version": outcome.to_version,
            "applied": len(outcome.applied),
            "attempts": outcome.attempts,
            **({"error": error.message, "sqlstate": error.sqlstate, "version": error.version} if error else {}),
        },
    )
    return outcome


def out_of_order_refusal(scripts: list[Script], state: history.SchemaState) -> str:
    """Why a target with these out-of-order versions is refused ('' when there are none)."""
    if not scripts:
        return ""
    names = ", ".join(f"{s.version} ({s.filename})" for s in scripts)
    return (
        f"out of order: version(s) {names} are below the applied version {max(state.applied)}; nothing was "
        "applied (allow out-of-order to apply them)"
    )


def apply_target(
    source: ConnectionSource, spec: TargetSpec, mset: MigrationSet, options: ApplyOptions
) -> TargetOutcome:
    """Bring one target to the newest version of ``mset``, running the set's callbacks at their moments; never
    raises for database errors."""
    around = (mset.callbacks_for("beforeEachMigrate"), mset.callbacks_for("afterEachMigrate"))
    unconfirmed: list[_Joined] = []  # a joined round trip's scripts, not known to have committed (lost connection)

    def callbacks(conn: psycopg.Connection, event: str, outcome: TargetOutcome) -> None:
        for callback in mset.callbacks_for(event):
            _run_callback(conn, spec, callback, options)
            outcome.callbacks.append(f"{event}: {callback.filename}")

    def migrate(conn: psycopg.Connection, state: history.SchemaState, outcome: TargetOutcome, lock: _HeldLock) -> None:
        drift = drift_of(state, mset)
        if drift:
            raise _Failed(TargetError(kind="drift", message="Drift: " + "; ".join(drift)))
        pending = pending_of(state, mset, spec.context)
        late = out_of_order_of(state, pending)
        if late and not (options.out_of_order or mset.out_of_order):
            raise _Failed(
                TargetError(
                    kind="out_of_order", message=out_of_order_refusal(late, state), version=str(late[0].version)
                )
            )
        create = ""  # a new schema: created in its first script's round trip when nothing has to run before it
        if not state.has_history:
            if pending and pending[0].transactional and not mset.callbacks_for("beforeMigrate"):
                create = history.ensure_text(conn, spec.schema, create_schema=spec.create_schema)
            else:
                history.ensure(conn, spec.schema, create_schema=spec.create_schema)
        callbacks(conn, "beforeMigrate", outcome)
        last = pending[-1] if pending and not mset.callbacks_for("afterMigrate") else None

        def values_of(script: Script) -> history.RowValues:
            return history.RowValues(
                version=str(script.version) if script.version else None,
                description=script.description,
                kind="SQL" if script.kind == "versioned" else "REPEATABLE",
                script=script.filename,
                checksum=script.checksum_for(spec.context),
                installed_by=options.installed_by,
                execution_id=options.execution_id,
            )

        def done(script: Script, checksum: str, applied: AppliedVersion) -> None:
            outcome.applied.append(applied)
            source.script_ms[(script.filename, script.checksum)] = applied.duration_ms
            if script.version:
                state.applied[script.version] = script.checksum
                outcome.to_version = str(state.current)
            else:
                state.repeatables[script.filename] = checksum

        def joined_done(item: _Joined, duration_ms: int) -> None:
            done(item.script, item.checksum, item.applied(duration_ms))

        if unconfirmed:  # the scripts of a joined round trip whose connection broke: those that committed
            for item, duration_ms in _committed(conn, spec.schema, unconfirmed) if state.has_history else ():
                outcome.applied.append(item.applied(duration_ms))
            unconfirmed.clear()
        start = 0
        while start < len(pending):
            _stop_point(options, pending[start])
            end = _joined_end(pending, start, source.script_ms, options.join_scripts_ms)
            if pending[start].transactional:
                items = []
                for script in pending[start:end]:
                    values = values_of(script)
                    text = history.insert_row_rendered(conn, spec.schema, values).as_string(conn)
                    items.append(_Joined(script, values.kind, values.checksum, text))
                release = lock if pending[end - 1] is last else None  # nothing runs after it under the lock
                try:
                    _run_joined(
                        conn, spec, items, options, around, joined_done, release=release, create=create, guard=lock
                    )
                except TransientError:
                    if source.broken:
                        unconfirmed[:] = items
                    raise
            else:
                script = pending[start]
                values = values_of(script)

                def row(duration: int, values=values, unless: sql.Composable | None = None) -> sql.Composed:
                    return history.insert_row_of(spec.schema, values, execution_time_ms=duration, unless=unless)

                applied = _run_script(conn, spec, script, values.kind, row, options, around, guarded=True)
                done(script, values.checksum, applied)
            create = ""
            start = end
        callbacks(conn, "afterMigrate", outcome)

    def work(conn: psycopg.Connection, state: history.SchemaState, outcome: TargetOutcome, lock: _HeldLock) -> None:
        try:
            migrate(conn, state, outcome, lock)
        except _Failed as exc:
            if exc.error.kind != "cancelled" and mset.callbacks_for("afterMigrateError"):
                _after_error(conn, spec, mset, options, outcome)
            raise

    return _run(source, spec, options, work, new_schema=_created_in_first_round_trip(spec, mset))


def _created_in_first_round_trip(spec: TargetSpec, mset: MigrationSet) -> bool:
    """Whether the target is a new schema (the plan found no history) whose first round trip creates it: a
    transactional script comes first and no callback runs before it or on an error (``_run``'s ``new_schema``)."""
    if spec.expect_history or mset.callbacks_for("beforeMigrate") or mset.callbacks_for("afterMigrateError"):
        return False
    first = next(iter([*mset.versions, *mset.repeatables]), None)  # what runs first where nothing was applied
    return first is not None and first.transactional


def _after_error(
    conn: psycopg.Connection, spec: TargetSpec, mset: MigrationSet, options: ApplyOptions, outcome: TargetOutcome
) -> None:
    """Run the ``afterMigrateError`` callbacks; their own failure is logged and leaves the target's error as it is."""
    for callback in mset.callbacks_for("afterMigrateError"):
        try:
            _run_callback(conn, spec, callback, options)
            outcome.callbacks.append(f"afterMigrateError: {callback.filename}")
        except (_Failed, TransientError, psycopg.Error) as exc:
            logger.warning(
                "afterMigrateError callback failed",
                extra={"target": spec.label, "script": callback.filename, "error": str(exc)},
            )


def undo_target(
    source: ConnectionSource,
    spec: TargetSpec,
    mset: MigrationSet,
    versions: list[Version],
    options: ApplyOptions,
) -> TargetOutcome:
    """Undo ``versions`` (newest first) with their undo scripts; versions not applied are passed over.

    Refused before any change when one of them is at or below the target's baseline: what led up to a baseline
    was never run by this engine, so undoing a version under it would leave the schema in no known state.
    """

    def work(conn: psycopg.Connection, state: history.SchemaState, outcome: TargetOutcome, _lock: _HeldLock) -> None:
        below = sorted(v for v in versions if v in state.applied and state.below_baseline(v))
        if below:
            raise _Failed(
                TargetError(
                    kind="baseline",
                    message=f"the target is baselined at version {state.baseline}: version(s) "
                    f"{', '.join(map(str, below))} at or below the baseline cannot be undone; nothing was undone",
                    version=str(below[-1]),
                )
            )
        for version in sorted(versions, reverse=True):
            if version not in state.applied:
                continue
            script = mset.undo.get(version)
            if script is None:
                raise _Failed(
                    TargetError(
                        kind="undo_missing", message=f"no undo script for version {version}", version=str(version)
                    )
                )
            _stop_point(options, script)

            def row(duration: int | None, script=script, version=version) -> sql.Composed:
                delete = sql.SQL("DELETE FROM {} WHERE type = 'SQL' AND version = {}").format(
                    history.table(spec.schema), sql.Literal(str(version))
                )
                # Repeatables may depend on what the undo removed: re-apply them after the next forward run.
                forget = sql.SQL("DELETE FROM {} WHERE type = 'REPEATABLE'").format(history.table(spec.schema))
                audit = history.insert_row(
                    schema=spec.schema,
                    version=str(version),
                    description=script.description,
                    kind="UNDO",
                    script=script.filename,
                    checksum=script.checksum,
                    installed_by=options.installed_by,
                    execution_id=options.execution_id,
                    execution_time_ms=duration,
                )
                return sql.SQL("; ").join([delete, forget, audit])

            if script.transactional:
                item = _Joined(script, "UNDO", script.checksum, row(None).as_string(conn))
                _run_joined(
                    conn, spec, [item], options, ([], []), lambda item, ms: outcome.applied.append(item.applied(ms))
                )
            else:
                outcome.applied.append(_run_script(conn, spec, script, "UNDO", row, options))
            state.applied.pop(version)
            outcome.to_version = str(state.current or "")
        if outcome.applied and state.baseline is not None and state.current == state.baseline:
            outcome.applied[-1].notes.append(
                f"the target is now at its baseline {state.baseline}: versions up to it cannot be undone"
            )

    return _run(source, spec, options, work)
