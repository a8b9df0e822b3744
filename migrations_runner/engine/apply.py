"""Applying (and undoing) migrations on one target: one (database, schema) pair.

Per target: take a PostgreSQL advisory lock for the schema, validate the
history against the set (drift fails the target before any change), create the
schema and history table when missing, then apply each pending version in its
own transaction together with its history row (``search_path``,
``statement_timeout`` and ``lock_timeout`` set locally). Scripts PostgreSQL
refuses inside a transaction run statement by statement in autocommit. Transient
errors are retried with backoff; a failure records SQLSTATE, message, version
and the failing statement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from migrations_runner.engine import history
from migrations_runner.engine.sets import MigrationSet, Script, Version
from migrations_runner.engine.sqltext import split_statements

logger = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x1F0A  # first key of the two-int advisory lock; the second is hashtext(schema)
TRANSIENT_SQLSTATES = {"55P03", "40001", "40P01", "57P01", "57P02", "57P03", "53300"}
NO_REPLAY_SQLSTATES = {"57014"}  # a statement that timed out would only time out again


class TransientError(Exception):
    """A failure worth retrying (lock wait, serialization, deadlock, lost connection)."""

    def __init__(self, error: TargetError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class TargetError:
    kind: str  # sql | drift | lock | connection | cancelled | undo_missing
    message: str
    sqlstate: str = ""
    version: str = ""
    script: str = ""
    statement: str = ""
    statement_index: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AppliedVersion:
    version: str
    description: str
    script: str
    duration_ms: int
    kind: str = "SQL"


@dataclass
class TargetOutcome:
    status: str  # succeeded | failed | cancelled
    from_version: str = ""
    to_version: str = ""
    applied: list[AppliedVersion] = field(default_factory=list)
    attempts: int = 0
    error: TargetError | None = None


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
    on_applied: Callable[[AppliedVersion], None] = lambda applied: None


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


def _locked(conn: psycopg.Connection, schema: str, options: ApplyOptions) -> None:
    try:
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false), pg_advisory_lock(%s, hashtext(%s))",
            [f"{int(options.lock_wait_s * 1000)}ms", LOCK_NAMESPACE, schema],
        )
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


def _run_script(
    conn: psycopg.Connection,
    spec: TargetSpec,
    script: Script,
    row: Callable[[int | None], sql.Composed],
    options: ApplyOptions,
) -> int:
    """Run one script with its history row; return its duration in ms. Raises TargetError / TransientError."""
    text = script.render(spec.context)
    started = time.perf_counter()
    context = {"version": str(script.version or ""), "script": script.filename}
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
        return int((time.perf_counter() - started) * 1000)
    statements = split_statements(text)
    conn.execute(
        "SELECT set_config('search_path', %s, false), set_config('statement_timeout', %s, false)",
        [sql.Identifier(spec.schema).as_string(None) + ", public", f"{options.statement_timeout_s}s"],
    )
    try:
        for index, statement in enumerate(statements):
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                error = _sql_error(exc, statement=statement, statement_index=index, **context)
                raise (TransientError(error) if _is_transient(exc) else _Failed(error)) from exc
        duration = int((time.perf_counter() - started) * 1000)
        conn.execute(row(duration))
    finally:
        if not conn.broken:
            conn.execute("RESET search_path; RESET statement_timeout")
    return duration


class _Failed(Exception):
    def __init__(self, error: TargetError) -> None:
        super().__init__(error.message)
        self.error = error


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
    """Return the versioned scripts not yet applied, then the repeatables whose checksum changed."""
    versions = [script for script in mset.versions if script.version not in state.applied]
    repeatables = [s for s in mset.repeatables if state.repeatables.get(s.filename) != s.checksum]
    return versions + repeatables


def _attempt(
    source: ConnectionSource, spec: TargetSpec, mset: MigrationSet, options: ApplyOptions, outcome: TargetOutcome
) -> None:
    conn = source.get()
    try:
        _locked(conn, spec.schema, options)
    except psycopg.Error as exc:
        error = _sql_error(exc)
        if exc.sqlstate == "55P03":
            error.kind = "lock"
            error.message = f"another run holds the migration lock of schema {spec.schema}"
        raise TransientError(error) from exc
    try:
        state = history.read_states(conn, [spec.schema])[spec.schema]
        if not outcome.from_version:
            outcome.from_version = str(state.current or "")
        drift = drift_of(state, mset)
        if drift:
            raise _Failed(TargetError(kind="drift", message="Drift: " + "; ".join(drift)))
        if not state.has_history:
            history.ensure(conn, spec.schema, create_schema=spec.create_schema)
        for script in pending_of(state, mset):
            if options.should_stop():
                raise _Failed(TargetError(kind="cancelled", message="cancelled before " + script.filename))
            kind = "SQL" if script.kind == "versioned" else "REPEATABLE"
            version = str(script.version) if script.version else None

            def row(duration: int | None, script=script, kind=kind, version=version) -> sql.Composed:
                return history.insert_row(
                    schema=spec.schema,
                    version=version,
                    description=script.description,
                    kind=kind,
                    script=script.filename,
                    checksum=script.checksum,
                    installed_by=options.installed_by,
                    execution_id=options.execution_id,
                    execution_time_ms=duration,
                )

            duration = _run_script(conn, spec, script, row, options)
            applied = AppliedVersion(version or "", script.description, script.filename, duration, kind)
            outcome.applied.append(applied)
            if version:
                outcome.to_version = version
            options.on_applied(applied)
    finally:
        try:
            _unlock(conn, spec.schema)
        except psycopg.Error:
            source.discard()


def apply_target(
    source: ConnectionSource, spec: TargetSpec, mset: MigrationSet, options: ApplyOptions
) -> TargetOutcome:
    """Bring one target to the newest version of ``mset``; never raises for database errors."""
    outcome = TargetOutcome(status="failed")
    for attempt in range(1, options.retry_attempts + 2):
        outcome.attempts = attempt
        try:
            _attempt(source, spec, mset, options, outcome)
        except TransientError as exc:
            outcome.error = exc.error
            if exc.error.kind == "connection" or (source._conn is not None and source._conn.broken):
                source.discard()
            if attempt > options.retry_attempts:
                break
            delay = options.retry_backoff_s * 2 ** (attempt - 1)
            logger.warning(
                "transient failure, retrying",
                extra={
                    "target": spec.label,
                    "attempt": attempt,
                    "sqlstate": exc.error.sqlstate,
                    "delay_s": delay,
                    "error": exc.error.message,
                },
            )
            time.sleep(delay)
            continue
        except _Failed as exc:
            outcome.error = exc.error
            outcome.status = "cancelled" if exc.error.kind == "cancelled" else "failed"
            return _finish(outcome, spec)
        except psycopg.Error as exc:
            source.discard()
            outcome.error = _sql_error(exc)
            if _is_transient(exc) and attempt <= options.retry_attempts:
                time.sleep(options.retry_backoff_s * 2 ** (attempt - 1))
                continue
            return _finish(outcome, spec)
        outcome.status = "succeeded"
        outcome.error = None
        if not outcome.to_version:
            outcome.to_version = outcome.from_version
        return _finish(outcome, spec)
    return _finish(outcome, spec)


def _finish(outcome: TargetOutcome, spec: TargetSpec) -> TargetOutcome:
    if outcome.status != "succeeded" and not outcome.to_version:
        outcome.to_version = outcome.applied[-1].version if outcome.applied else outcome.from_version
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


def undo_target(
    source: ConnectionSource,
    spec: TargetSpec,
    mset: MigrationSet,
    versions: list[Version],
    options: ApplyOptions,
) -> TargetOutcome:
    """Undo ``versions`` (newest first) with their undo scripts; versions not applied are passed over."""
    outcome = TargetOutcome(status="failed", attempts=1)
    conn = source.get()
    try:
        _locked(conn, spec.schema, options)
    except psycopg.Error as exc:
        outcome.error = _sql_error(exc)
        return _finish(outcome, spec)
    try:
        state = history.read_states(conn, [spec.schema])[spec.schema]
        outcome.from_version = str(state.current or "")
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
            delete = sql.SQL("DELETE FROM {} WHERE type = 'SQL' AND version = {}").format(
                history.table(spec.schema), sql.Literal(str(version))
            )

            def row(duration: int | None, script=script, version=version, delete=delete) -> sql.Composed:
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
                # Repeatables may depend on what the undo removed: re-apply them after the next forward run.
                forget = sql.SQL("DELETE FROM {} WHERE type = 'REPEATABLE'").format(history.table(spec.schema))
                return sql.SQL("; ").join([delete, forget, audit])

            duration = _run_script(conn, spec, script, row, options)
            state.applied.pop(version)
            applied = AppliedVersion(str(version), script.description, script.filename, duration, "UNDO")
            outcome.applied.append(applied)
            options.on_applied(applied)
        outcome.status = "succeeded"
        outcome.to_version = str(state.current or "")
    except (_Failed, TransientError) as exc:
        outcome.error = exc.error
    except psycopg.Error as exc:
        outcome.error = _sql_error(exc)
        source.discard()
    finally:
        try:
            _unlock(conn, spec.schema)
        except psycopg.Error:
            source.discard()
    return _finish(outcome, spec)
