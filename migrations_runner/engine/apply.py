"""Applying (and undoing) migrations on one target: one (database, schema) pair.

Per target: take a PostgreSQL advisory lock for the schema, read the history,
validate it against the set (drift fails the target before any change), create
the schema and history table when missing, then apply each pending version in
its own transaction together with its history row (``search_path``,
``statement_timeout`` and ``lock_timeout`` set locally). Scripts PostgreSQL
refuses inside a transaction run statement by statement in autocommit. Undo
runs the same way, newest version first. Transient errors (lost connection,
55P03, 40001, 40P01, 57P01 and the like) are retried with backoff; ``should_stop``
is asked before each script. A failure records SQLSTATE, message, version and
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

``TargetOutcome.status``: ``succeeded``, ``failed``, ``cancelled``.

``TargetError.kind``, from the engine: ``sql`` (a statement failed), ``connection``
(no or lost connection), ``lock`` (another run held the migration lock past the
lock wait), ``drift`` (applied history differs from the set), ``invalid_index``
(a non-transactional script left an invalid index in the schema), ``placeholder``
(a placeholder value that cannot be put into SQL text safely), ``cancelled``,
``undo_missing``, ``baseline`` (an undo of a version at or below the target's
baseline); from the services around it: ``set_changed`` (the set on disk differs
from the execution's snapshot), ``worker_lost`` (a lane's worker stopped renewing
its lease), ``internal`` (an unexpected exception outside the engine).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TypedDict

import psycopg
from psycopg import sql

from migrations_runner.engine import history
from migrations_runner.engine.sets import MigrationSet, PlaceholderValueError, Script, Version
from migrations_runner.engine.sqltext import split_statements, strip_comments

logger = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x1F0A  # first key of the two-int advisory lock; the second is hashtext(schema)
TRANSIENT_SQLSTATES = {"55P03", "40001", "40P01", "57P01", "57P02", "57P03", "53300"}
NO_REPLAY_SQLSTATES = {"57014"}  # a statement that timed out would only time out again

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_INDEX_CONCURRENTLY = re.compile(
    rf"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?P<name>{_IDENT}(?:\s*\.\s*{_IDENT})?)\s+ON\b",
    re.IGNORECASE,
)


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
    status: str  # succeeded | failed | cancelled
    from_version: str = ""
    to_version: str = ""
    applied: list[AppliedVersion] = field(default_factory=list)
    attempts: int = 0
    error: TargetError | None = None
    # Whether a statement ever ran on the target's database: a target never reached changed nothing there.
    reached: bool = False


@dataclass
class TargetSpec:
    """Where and as what a target is migrated."""

    schema: str
    create_schema: bool
    context: dict[str, str]
    label: str = ""


@dataclass
class ApplyOptions:
    installed_by: str
    execution_id: str | None = None
    statement_timeout_s: int = 300
    lock_timeout_s: float = 10.0
    lock_wait_s: float = 60.0
    retry_attempts: int = 3
    retry_backoff_s: float = 0.5
    should_stop: Callable[[], bool] = lambda: False


class ConnectionSource:
    """Hands out one live connection to a database and replaces it after it broke."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None

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
    if not conn.broken and not conn.closed:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_NAMESPACE, schema])


def _local_settings(schema: str, options: ApplyOptions) -> sql.Composed:
    return sql.SQL(
        "SELECT set_config('search_path', {path}, true), set_config('statement_timeout', {st}, true), "
        "set_config('lock_timeout', {lt}, true)"
    ).format(
        path=sql.Literal(sql.Identifier(schema).as_string(None) + ", public"),
        st=sql.Literal(f"{options.statement_timeout_s}s"),
        lt=sql.Literal(f"{int(options.lock_timeout_s * 1000)}ms"),
    )


def _locate_failure(conn: psycopg.Connection, spec: TargetSpec, text: str, options: ApplyOptions) -> tuple[int, str]:
    """Replay a failed transactional script statement by statement (rolled back) to find the failing one."""
    statements = split_statements(text)
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


def _unquote(identifier: str) -> str:
    """The name PostgreSQL stores for an identifier as written: quoted ones verbatim, others folded to lower case."""
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


def created_indexes(text: str, schema: str) -> list[str]:
    """Return the names of the indexes ``text`` builds with ``CREATE [UNIQUE] INDEX CONCURRENTLY`` in ``schema``.

    Unqualified names count as ``schema``'s (an index always lives in its table's schema); unnamed builds are
    not listed.
    """
    names = []
    for statement in split_statements(text):
        match = _CREATE_INDEX_CONCURRENTLY.match(strip_comments(statement))
        if match:
            *qualifier, name = (_unquote(part) for part in re.findall(_IDENT, match.group("name")))
            if not qualifier or qualifier[0] == schema:
                names.append(name)
    return list(dict.fromkeys(names))


def invalid_indexes(conn: psycopg.Connection, schema: str, names: list[str] | None = None) -> list[str]:
    """Return the INVALID indexes of ``schema`` (only among ``names`` when given), sorted by name.

    Partitioned indexes (relkind ``I``) are left out: one is invalid while a partition lacks its index, a state
    built on purpose with ``CREATE INDEX ... ON ONLY``, not the leftover of a failed build.
    """
    rows = conn.execute(
        """
        SELECT c.relname
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind = 'i' AND NOT i.indisvalid
          AND (%s::text[] IS NULL OR c.relname = ANY(%s::text[]))
        ORDER BY 1
        """,
        [schema, names, names],
    )
    return [name for (name,) in rows]


def _run_script(
    conn: psycopg.Connection,
    spec: TargetSpec,
    script: Script,
    kind: str,
    row: Callable[[int | None], sql.Composed],
    options: ApplyOptions,
) -> AppliedVersion:
    """Run one script with its history row. Raises _Failed / TransientError (psycopg.Error outside statements)."""
    context: _ScriptContext = {"version": str(script.version or ""), "script": script.filename}
    try:
        text = script.render(spec.context)
    except PlaceholderValueError as exc:
        raise _Failed(TargetError(kind="placeholder", message=str(exc), **context)) from exc
    started = time.perf_counter()
    applied = AppliedVersion(context["version"], script.description, script.filename, 0, kind)
    if script.transactional:
        # One round trip: the transaction, its settings, the script and its history row. When a statement
        # fails the server skips the rest (the INSERT and COMMIT included) and we roll back.
        body = sql.SQL(";\n").join(
            [sql.SQL("BEGIN"), _local_settings(spec.schema, options), sql.SQL(text), row(None), sql.SQL("COMMIT")]
        )
        try:
            conn.execute(body)
        except psycopg.Error as exc:
            if not conn.broken:
                conn.execute("ROLLBACK")
            error = _sql_error(exc, **context)
            if _is_transient(exc):
                raise TransientError(error) from exc
            if exc.sqlstate not in NO_REPLAY_SQLSTATES:
                index, statement = _locate_failure(conn, spec, text, options)
                if index >= 0:
                    error.statement_index, error.statement = index, statement
            raise _Failed(error) from exc
        applied.duration_ms = int((time.perf_counter() - started) * 1000)
        return applied

    def execute(statement: str | sql.Composed, index: int | None) -> None:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            shown = statement if isinstance(statement, str) else statement.as_string(conn)
            error = _sql_error(exc, statement=shown, statement_index=index, **context)
            raise (TransientError(error) if _is_transient(exc) else _Failed(error)) from exc

    conn.execute(
        "SELECT set_config('search_path', %s, false), set_config('statement_timeout', %s, false)",
        [sql.Identifier(spec.schema).as_string(None) + ", public", f"{options.statement_timeout_s}s"],
    )
    try:
        # An interrupted build of an index this script creates left it INVALID; IF NOT EXISTS would keep it.
        for name in invalid_indexes(conn, spec.schema, created_indexes(text, spec.schema)):
            logger.warning(
                "dropping an invalid index left by an interrupted build",
                extra={"target": spec.label, "index": f"{spec.schema}.{name}", **context},
            )
            execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(spec.schema, name)), None)
            applied.notes.append(f"dropped invalid index {spec.schema}.{name} left by an interrupted build")
        for index, statement in enumerate(split_statements(text)):
            execute(statement, index)
        invalid = invalid_indexes(conn, spec.schema)
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
        applied.duration_ms = int((time.perf_counter() - started) * 1000)
        conn.execute(row(applied.duration_ms))
    finally:
        if not conn.broken:
            conn.execute("RESET search_path; RESET statement_timeout")
    return applied


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


def pending_of(state: history.SchemaState, mset: MigrationSet) -> list[Script]:
    """Return the versioned scripts not yet applied (nor covered by a baseline), then the changed repeatables."""
    versions = [
        script
        for script in mset.versions
        if script.version not in state.applied and not state.below_baseline(script.require_version())
    ]
    repeatables = [s for s in mset.repeatables if state.repeatables.get(s.filename) != s.checksum]
    return versions + repeatables


def _stop_point(options: ApplyOptions, script: Script) -> None:
    if options.should_stop():
        raise _Failed(TargetError(kind="cancelled", message="cancelled before " + script.filename))


_Work = Callable[[psycopg.Connection, history.SchemaState, TargetOutcome], None]


def _run(source: ConnectionSource, spec: TargetSpec, options: ApplyOptions, work: _Work) -> TargetOutcome:
    """Run ``work`` on the target under its migration lock, retrying transient failures with backoff.

    Each attempt re-reads the history, so what an earlier attempt committed is not run again. Never raises
    for database errors.
    """
    outcome = TargetOutcome(status="failed")
    state_read = False
    for attempt in range(1, options.retry_attempts + 2):
        outcome.attempts = attempt
        try:
            conn = source.get()
            _lock(conn, spec.schema, options)
            outcome.reached = True
            try:
                state = history.read_states(conn, [spec.schema])[spec.schema]
                if not state_read:
                    outcome.from_version, state_read = str(state.current or ""), True
                outcome.to_version = str(state.current or "")
                work(conn, state, outcome)
            finally:
                try:
                    _unlock(conn, spec.schema)
                except psycopg.Error:
                    source.discard()
        except _Failed as exc:
            outcome.error = exc.error
            outcome.status = "cancelled" if exc.error.kind == "cancelled" else "failed"
            return _finish(outcome, spec)
        except TransientError as exc:
            outcome.error, retry = exc.error, True
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


def apply_target(
    source: ConnectionSource, spec: TargetSpec, mset: MigrationSet, options: ApplyOptions
) -> TargetOutcome:
    """Bring one target to the newest version of ``mset``; never raises for database errors."""

    def work(conn: psycopg.Connection, state: history.SchemaState, outcome: TargetOutcome) -> None:
        drift = drift_of(state, mset)
        if drift:
            raise _Failed(TargetError(kind="drift", message="Drift: " + "; ".join(drift)))
        if not state.has_history:
            history.ensure(conn, spec.schema, create_schema=spec.create_schema)
        for script in pending_of(state, mset):
            _stop_point(options, script)
            kind = "SQL" if script.kind == "versioned" else "REPEATABLE"

            def row(duration: int | None, script=script, kind=kind) -> sql.Composed:
                return history.insert_row(
                    schema=spec.schema,
                    version=str(script.version) if script.version else None,
                    description=script.description,
                    kind=kind,
                    script=script.filename,
                    checksum=script.checksum,
                    installed_by=options.installed_by,
                    execution_id=options.execution_id,
                    execution_time_ms=duration,
                )

            outcome.applied.append(_run_script(conn, spec, script, kind, row, options))
            if script.version:
                state.applied[script.version] = script.checksum
                outcome.to_version = str(state.current)

    return _run(source, spec, options, work)


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

    def work(conn: psycopg.Connection, state: history.SchemaState, outcome: TargetOutcome) -> None:
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

            outcome.applied.append(_run_script(conn, spec, script, "UNDO", row, options))
            state.applied.pop(version)
            outcome.to_version = str(state.current or "")
        if outcome.applied and state.baseline is not None and state.current == state.baseline:
            outcome.applied[-1].notes.append(
                f"the target is now at its baseline {state.baseline}: versions up to it cannot be undone"
            )

    return _run(source, spec, options, work)
