"""Claiming target runs and recording their outcomes.

A lane claims the next pending target run of the execution's current phase with one conditional statement
(respecting the batch size and ``MIGRATION_MAX_PER_DATABASE`` across all executions), and records a run's
outcome and claims the next one in the same transaction. On PostgreSQL that transaction is one round trip for
the usual outcome: the claim lock, then one statement that writes the outcome, counts it and claims, then the
commit, so the lock serialising claims is held for the server's work alone. A lane with quick targets claims
its next run ahead (``ahead``): reserved, still pending, and started in the statement that records the run
before it. Each step is retried while the control database is unreachable.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db import connection as control_db
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F
from django.utils import timezone

from connections.models import DatabaseConnection, Tenant
from migrations_runner.models import MigrationExecution, TargetRun, TargetStatus
from migrations_runner.services.runner.control import control_retry
from migrations_runner.services.runner.counters import (
    outcome_count,
    outcome_count_assignments,
    outcome_count_params,
)
from migrations_runner.services.runner.halting import after_failure
from migrations_runner.services.runner.leases import Leases
from migrations_runner.services.runner.reachability import servers_to_skip

logger = logging.getLogger(__name__)

_CLAIM_LOCK = 0x1F0C  # PostgreSQL control database: claims are serialized so the caps hold exactly
_local = threading.local()  # per lane thread: the registry rows of the connections its runs were on
_statements: dict[str, Any] = {}  # hot statements (and the claim's column readers), composed once per process

OUTCOME_FIELDS = [
    "status",
    "to_version",
    "applied_versions",
    "attempts",
    "error",
    "completed_at",
    "duration_ms",
    "lock_waits",
    "waiting",
]
# A claimed run given back: the fields its claim set, as they were (its outcome was never written); its
# attempts count the give-backs until a real outcome is recorded.
PENDING_FIELDS: dict[str, Any] = {
    "status": TargetStatus.PENDING,
    "worker": "",
    "started_at": None,
    "heartbeat_at": None,
    "attempts": F("attempts") + 1,
}


def _control() -> BaseDatabaseWrapper:
    """This thread's control-database connection itself: ``control_db`` (``django.db.connection``) looks it up
    again at every attribute, which a lane's per-target steps would do a few dozen times a target."""
    return connections[DEFAULT_DB_ALIAS]


def _table(model: type[models.Model]) -> str:
    return control_db.ops.quote_name(model._meta.db_table)


def _claim(execution: MigrationExecution, me: str, skip: list[str]) -> TargetRun | None:
    """Claim the next pending run of the execution's current phase within both caps and on none of the ``skip``
    servers: the run as claimed, or None when none can be. The caller's transaction holds the claim lock until it
    commits: keep what follows it short."""
    with control_db.cursor() as cursor:
        if control_db.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CLAIM_LOCK])
        cursor.execute(_claim_statement(len(skip)), _claim_params(execution, me, skip))
        row = cursor.fetchone()
    return None if row is None else _claimed_run(row)


def _claim_statement(skipped: int) -> str:
    """The claim's statement for ``skipped`` unreachable servers, composed once per process and count."""
    key = f"claim:{skipped}"
    statement = _statements.get(key)
    if statement is None:
        statement = _statements[key] = _claim_update(skipped, after_record=False)
    return statement


def _claim_update(skipped: int, *, after_record: bool) -> str:
    """The claim's ``UPDATE ... RETURNING`` (parameters: ``_claim_params``); ``after_record``: it is a CTE of a
    statement whose CTE ``recorded`` writes an outcome, and the run recorded there no longer counts as running.

    On PostgreSQL the candidate's status is matched as the range ``pending..pending`` and the order is ``status,
    phase, id`` (the same rows, in the same order): a status matched by equality is a constant to the planner,
    the order reduces to ``id``, and the primary key gives it too. A plan made on statistics from before the
    execution ran walks that key past every run claimed before: 10 ms a claim with 9,000 of 10,000 runs done,
    against 0.2 ms through ``target_run_claim``, the only index with this order. SQLite's planner takes that
    index for the plain equality, and would sort for the range."""
    runs, executions = _table(TargetRun), _table(MigrationExecution)
    lock = " FOR UPDATE OF c SKIP LOCKED" if control_db.vendor == "postgresql" else ""
    status, order, _ = _pending_match()
    unreachable = f"AND c.server NOT IN ({', '.join(['%s'] * skipped)})" if skipped else ""
    recorded = " AND r.id NOT IN (SELECT id FROM recorded)" if after_record else ""
    connections_table, tenants_table = _table(DatabaseConnection), _table(Tenant)
    columns = ", ".join(control_db.ops.quote_name(f.column or f.name) for f in TargetRun._meta.concrete_fields)
    return f"""
        UPDATE {runs} SET status = %s, worker = %s, started_at = %s, heartbeat_at = %s
        WHERE id = (
            SELECT c.id FROM {runs} c
            WHERE c.execution_id = %s AND {status} AND c.worker = ''
              AND c.phase = (SELECT e.current_phase FROM {executions} e WHERE e.id = %s AND NOT e.cancel_requested)
              AND (SELECT count(*) FROM {runs} r WHERE r.execution_id = %s AND r.status = %s{recorded}) < %s
              AND c.server NOT IN (
                  SELECT r.server FROM {runs} r WHERE r.status = %s{recorded}
                  GROUP BY r.server HAVING count(*) >= %s
              )
              AND (c.retry_at IS NULL OR c.retry_at <= %s)
              {unreachable}
            ORDER BY {order} LIMIT 1{lock}
        )
        RETURNING {columns},
            (SELECT x.updated_at FROM {connections_table} x WHERE x.id = {runs}.connection_id) AS connection_updated_at,
            (SELECT x.slug FROM {tenants_table} x WHERE x.id = {runs}.tenant_id) AS tenant_slug
    """  # noqa: S608 (table and column names come from the models, values are parameters)


def _claim_ahead_statement() -> str:
    """The claim ahead's ``UPDATE ... RETURNING`` (parameters: ``_claim_ahead_params``): the next pending runs (as
    many as asked) of the execution's current phase on the current run's server, reserved for the lane (their
    ``worker`` set, their lease begun) and left pending. No cap is counted and no claim lock taken: a reserved run
    counts nowhere until its lane starts it in place of the run at work, a run of the same execution on the same
    server, in the transaction that records that one (``_record_and_start``), so neither cap's count changes
    there."""
    statement = _statements.get("claim-ahead")
    if statement is None:
        runs, executions = _table(TargetRun), _table(MigrationExecution)
        lock = " FOR UPDATE OF c SKIP LOCKED" if control_db.vendor == "postgresql" else ""
        status, order, _ = _pending_match()
        connections_table, tenants_table = _table(DatabaseConnection), _table(Tenant)
        columns = ", ".join(control_db.ops.quote_name(f.column or f.name) for f in TargetRun._meta.concrete_fields)
        # The candidates are picked once (a CTE kept apart): under ``id IN (...)`` PostgreSQL may run a LIMIT ...
        # SKIP LOCKED subquery again for each row it compares, and reserve more runs than asked.
        statement = f"""
            WITH picked AS MATERIALIZED (
                SELECT c.id AS pick FROM {runs} c
                WHERE c.execution_id = %s AND {status} AND c.worker = '' AND c.server = %s
                  AND c.phase = (
                      SELECT e.current_phase FROM {executions} e WHERE e.id = %s AND NOT e.cancel_requested
                  )
                  AND (c.retry_at IS NULL OR c.retry_at <= %s)
                ORDER BY {order} LIMIT %s{lock}
            )
            UPDATE {runs} SET worker = %s, heartbeat_at = %s
            FROM picked WHERE {runs}.id = picked.pick AND {runs}.worker = ''
            RETURNING {columns},
                (SELECT x.updated_at FROM {connections_table} x WHERE x.id = {runs}.connection_id),
                (SELECT x.slug FROM {tenants_table} x WHERE x.id = {runs}.tenant_id)
        """  # noqa: S608 (table and column names come from the models, values are parameters)
        _statements["claim-ahead"] = statement
    return statement


def _claim_ahead_params(execution: MigrationExecution, me: str, current: TargetRun, count: int) -> list[Any]:
    db = _control()
    execution_key = MigrationExecution._meta.pk.get_db_prep_value(execution.pk, db)
    now = db.ops.adapt_datetimefield_value(timezone.now())
    pending = [TargetStatus.PENDING] * _pending_match()[2]
    return [execution_key, *pending, current.server, execution_key, now, count, me, now]


def _claim_ahead(execution: MigrationExecution, me: str, current: TargetRun, count: int) -> list[TargetRun]:
    rows = _hot_rows(_claim_ahead_statement(), _claim_ahead_params(execution, me, current, count))
    return sorted((_claimed_run(row) for row in rows), key=lambda run: run.pk)  # the order the lane applies them


_PREPARE_ONLY_WHEN_ASKED = 2**31 - 1  # a threshold no statement reaches: only those sent with prepare=True are


def _hot_rows(statement: str, params: list[Any]) -> list[tuple]:
    """Run one of a lane's per-target statements (a single statement, its own transaction) and return its rows.
    On PostgreSQL with ``MIGRATION_CONTROL_PREPARED`` it is a prepared statement of the lane's connection:
    planned once, not at every target (planning them took about as long as running them). Django's own queries
    on that connection stay unprepared (its cursors bind on the client)."""
    db = _control()
    if db.vendor != "postgresql" or not settings.MIGRATION_CONTROL_PREPARED:
        with db.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()
    db.ensure_connection()
    with db.wrap_database_errors:
        raw = db.connection
        if raw.prepare_threshold is None:
            raw.prepare_threshold = _PREPARE_ONLY_WHEN_ASKED
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(statement, params, prepare=True)
            return cursor.fetchall()


def _pending_match() -> tuple[str, str, int]:
    """How the claim matches a pending candidate on this control database (see ``_claim_update``): the condition,
    the order, and how many ``pending`` parameters the condition takes."""
    if _control().vendor == "postgresql":
        return "c.status >= %s AND c.status <= %s", "c.status, c.phase, c.id", 2
    return "c.status = %s", "c.id", 1


def _claim_params(execution: MigrationExecution, me: str, skip: list[str]) -> list[Any]:
    db = _control()
    execution_key = MigrationExecution._meta.pk.get_db_prep_value(execution.pk, db)
    # As the ORM would store it (on SQLite a text whose form must match the ORM's later comparisons).
    now = db.ops.adapt_datetimefield_value(timezone.now())
    return [
        TargetStatus.RUNNING,
        me,
        now,
        now,
        execution_key,
        *[TargetStatus.PENDING] * _pending_match()[2],
        execution_key,
        execution_key,
        TargetStatus.RUNNING,
        execution.batch_size,
        TargetStatus.RUNNING,
        settings.MIGRATION_MAX_PER_DATABASE,
        now,
        *skip,
    ]


def _claimed_run(row: tuple) -> TargetRun:
    """The TargetRun a claim's returned row describes (every column through its field's converters, as the ORM
    reads them), with its connection's ``updated_at`` and its tenant's slug as ``connection_updated_at`` and
    ``tenant_slug``."""
    db = _control()
    readers = _statements.get("readers")
    if readers is None:
        readers = [
            (field.attname, [*control_db.ops.get_db_converters(col), *col.get_db_converters(control_db)], col)
            for field in TargetRun._meta.concrete_fields
            for col in [field.get_col(TargetRun._meta.db_table)]
        ]
        _statements["readers"] = readers
    values = []
    for (_name, converters, col), value in zip(readers, row, strict=False):
        for converter in converters:
            value = converter(value, col, db)
        values.append(value)
    run = TargetRun.from_db(db.alias, [name for name, _, _ in readers], values)
    run.connection_updated_at = row[len(readers)]  # type: ignore[attr-defined]
    run.tenant_slug = row[len(readers) + 1]  # type: ignore[attr-defined]
    return run


@control_retry
def _claimed(run: TargetRun | None, execution: MigrationExecution) -> TargetRun | None:
    """Put a committed claim's run under lease, with its connection (read once per lane per version of the
    connection) and its tenant's slug."""
    if run is None:
        return None
    read = _local.__dict__.setdefault("connections", {})
    key = (run.connection_id, str(getattr(run, "connection_updated_at", "")))
    if key not in read:
        # The password stays encrypted: a lane's connection source is made once per connection
        # (``apply._source_for``).
        read[key] = DatabaseConnection.all_objects.defer("password").get(pk=run.connection_id)
    run.connection = read[key]
    if run.tenant_id is not None:
        # Only the slug of a claimed run's tenant is read (its placeholders).
        run.tenant = Tenant(pk=run.tenant_id, slug=getattr(run, "tenant_slug", ""))
    Leases.hold(run_id=run.pk, execution_id=execution.pk)
    return run


def _deferred_fields(run: TargetRun, retry_after_s: float) -> dict[str, Any]:
    """What a run handed back after a lock wait keeps: its waits, since when, and when it may run again."""
    now = timezone.now()
    return {
        "lock_waits": run.lock_waits,
        "lock_blocked_since": run.lock_blocked_since or now,
        "waiting": run.waiting,
        "retry_at": now + timedelta(seconds=retry_after_s),
        "attempts": F("attempts"),  # a lock wait is not a give-back of an unreachable server
    }


def _record(
    run: TargetRun, execution: MigrationExecution, me: str, *, give_back: str = "", retry_after_s: float = 0.0
) -> Callable[[], None]:
    """Write a run's outcome (in the caller's transaction) and return the update of the execution's counters,
    for the caller to run last before its commit; a run given back goes to pending instead: ``unreachable`` (its
    database server was never reached) or ``deferred`` (a table lock was held: it may be claimed again at
    ``retry_at``, by any lane, while this one runs others)."""
    if give_back:
        deferred = _deferred_fields(run, retry_after_s) if give_back == "deferred" else {}
        fields = {**PENDING_FIELDS, **deferred}
        TargetRun.objects.filter(pk=run.pk, worker=me, status=TargetStatus.RUNNING).update(**fields)
        Leases.release(run_id=run.pk)
        return _nothing
    recorded = _outcome_write(run, me)
    Leases.release(run_id=run.pk)
    if not recorded:  # recovered as lost meanwhile: that record stands
        logger.warning("target run was recovered before its outcome was recorded", extra={"target_run": run.pk})
        return _nothing
    if run.status == TargetStatus.FAILED:
        after_failure(run=run, execution=execution)
    return lambda: outcome_count(execution_id=execution.pk, run=run)


def _nothing() -> None:
    return None


def _outcome_statement() -> tuple[list[Any], str]:
    """The outcome fields and their ``SET`` list (parameters: ``_outcome_params``), composed once per process."""
    composed = _statements.get("outcome-set")
    if composed is None:
        fields = [f for f in TargetRun._meta.concrete_fields if f.name in OUTCOME_FIELDS]
        assignments = ", ".join(f"{control_db.ops.quote_name(f.column or f.name)} = %s" for f in fields)
        composed = _statements["outcome-set"] = (fields, assignments)
    return composed


def _outcome_params(run: TargetRun, me: str) -> list[Any]:
    fields, _ = _outcome_statement()
    db = _control()
    values = [f.get_db_prep_save(getattr(run, f.attname), connection=db) for f in fields]
    return [*values, run.pk, me, TargetStatus.RUNNING]


def _outcome_write(run: TargetRun, me: str) -> bool:
    """Store the outcome fields of a run this lane holds (one statement, composed once per process)."""
    statement = _statements.get("outcome")
    if statement is None:
        _, assignments = _outcome_statement()
        statement = f"UPDATE {_table(TargetRun)} SET {assignments} WHERE id = %s AND worker = %s AND status = %s"  # noqa: S608
        _statements["outcome"] = statement
    with control_db.cursor() as cursor:
        cursor.execute(statement, _outcome_params(run, me))
        return cursor.rowcount == 1


def _at_once(run: TargetRun, *, claim: bool, give_back: str) -> bool:
    """Whether recording ``run``'s outcome and claiming the next run can go to the control database as one
    transaction in one round trip: on PostgreSQL, outside any caller's transaction, for an outcome that is
    recorded (not given back) and halts nothing (a failure may halt the execution before the next claim)."""
    return claim and not give_back and run.status != TargetStatus.FAILED and _one_round_trip()


def _one_round_trip() -> bool:
    """Whether a lane's transaction may go to the control database as one round trip that is its own transaction:
    on PostgreSQL, and outside any caller's transaction (which it would commit, or be rolled back with)."""
    db = _control()
    return db.vendor == "postgresql" and not db.in_atomic_block and db.get_autocommit()


def _record_and_claim_statement(status: str, skipped: int) -> str:
    """One transaction in one round trip: take the claim lock, then (one statement, one snapshot) write the
    outcome, count it on the execution only when it was written, and claim the next run with the recorded run
    no longer counted as running; commit. The lock is released by the server's commit, never after a client's
    turn. Parameters: ``_record_and_claim_params``."""
    key = f"record-and-claim:{status}:{skipped}"
    statement = _statements.get(key)
    if statement is None:
        _, assignments = _outcome_statement()
        runs, executions = _table(TargetRun), _table(MigrationExecution)
        statement = f"""BEGIN;
            SELECT pg_advisory_xact_lock(%s);
            WITH recorded AS (
                UPDATE {runs} SET {assignments} WHERE id = %s AND worker = %s AND status = %s RETURNING id
            ), counted AS (
                UPDATE {executions} SET {outcome_count_assignments(status)}
                WHERE id = %s AND EXISTS (SELECT FROM recorded)
            ), claimed AS ({_claim_update(skipped, after_record=True)})
            SELECT (SELECT count(*) FROM recorded), claimed.* FROM (VALUES (0)) AS one LEFT JOIN claimed ON true;
            COMMIT"""  # noqa: S608 (table and column names come from the models, values are parameters)
        _statements[key] = statement
    return statement


def _record_and_claim_params(run: TargetRun, execution: MigrationExecution, me: str, skip: list[str]) -> list[Any]:
    execution_key = MigrationExecution._meta.pk.get_db_prep_value(execution.pk, _control())
    return [
        _CLAIM_LOCK,
        *_outcome_params(run, me),
        *outcome_count_params(run),
        execution_key,
        *_claim_params(execution, me, skip),
    ]


def _record_and_claim_at_once(
    run: TargetRun, execution: MigrationExecution, me: str, skip: list[str]
) -> TargetRun | None:
    """Record ``run``'s outcome and claim the next run in one round trip (see ``_record_and_claim_statement``)."""
    statement = _record_and_claim_statement(run.status, len(skip))
    params = _record_and_claim_params(run, execution, me, skip)
    try:
        with control_db.cursor() as cursor:
            cursor.execute(statement, params)  # every statement's result is in: an error in any raised here
            cursor.nextset()  # past BEGIN's and the lock's results to the recording's row
            cursor.nextset()
            row = cursor.fetchone()
    except BaseException:
        _rollback_left_open()
        raise
    Leases.release(run_id=run.pk)
    if not row[0]:  # recovered as lost meanwhile: that record stands
        logger.warning("target run was recovered before its outcome was recorded", extra={"target_run": run.pk})
    return None if row[1] is None else _claimed_run(row[1:])


def _record_and_start_statement(status: str) -> str:
    """One statement (one round trip, one transaction): write ``run``'s outcome, count it, and start the run the
    lane claimed ahead, only when the outcome was written and the reserved run is still pending and the lane's
    (not cancelled, skipped or recovered meanwhile). Parameters: ``_record_and_start_params``."""
    key = f"record-and-start:{status}"
    statement = _statements.get(key)
    if statement is None:
        _, assignments = _outcome_statement()
        runs, executions = _table(TargetRun), _table(MigrationExecution)
        statement = f"""
            WITH recorded AS (
                UPDATE {runs} SET {assignments} WHERE id = %s AND worker = %s AND status = %s RETURNING id
            ), counted AS (
                UPDATE {executions} SET {outcome_count_assignments(status)}
                WHERE id = %s AND EXISTS (SELECT FROM recorded)
            ), started AS (
                UPDATE {runs} SET {_START_ASSIGNMENTS}
                WHERE id = %s AND worker = %s AND status = %s AND EXISTS (SELECT FROM recorded) RETURNING id
            )
            SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM started)
        """  # noqa: S608 (table and column names come from the models, values are parameters)
        _statements[key] = statement
    return statement


_START_ASSIGNMENTS = "status = %s, started_at = %s, heartbeat_at = %s"


def _start_params(run: TargetRun, me: str) -> list[Any]:
    """Parameters of ``_START_ASSIGNMENTS`` and its condition: ``run`` (claimed ahead by ``me``) starts now."""
    now = timezone.now()
    run.started_at = now
    at = _control().ops.adapt_datetimefield_value(now)
    return [TargetStatus.RUNNING, at, at, run.pk, me, TargetStatus.PENDING]


def _start(run: TargetRun, me: str) -> bool:
    """Start ``run``, claimed ahead by ``me``, if it is still pending and the lane's (the caller's transaction)."""
    statement = _statements.get("start")
    if statement is None:
        statement = f"UPDATE {_table(TargetRun)} SET {_START_ASSIGNMENTS} WHERE id = %s AND worker = %s AND status = %s"  # noqa: S608
        _statements["start"] = statement
    with control_db.cursor() as cursor:
        cursor.execute(statement, _start_params(run, me))
        return cursor.rowcount == 1


def _record_and_start(run: TargetRun, start: TargetRun, execution: MigrationExecution, me: str) -> bool:
    """Record ``run``'s outcome (one recorded at once: not failed, not given back) and start ``start`` in its
    place; whether ``start`` started (the outcome was written and ``start`` was still the lane's)."""
    if _one_round_trip():
        execution_key = MigrationExecution._meta.pk.get_db_prep_value(execution.pk, _control())
        params = [*_outcome_params(run, me), *outcome_count_params(run), execution_key, *_start_params(start, me)]
        ((recorded, started),) = _hot_rows(_record_and_start_statement(run.status), params)
    else:
        with transaction.atomic():
            recorded = _outcome_write(run, me)
            started = recorded and _start(start, me)
            if recorded:
                outcome_count(execution_id=execution.pk, run=run)
    Leases.release(run_id=run.pk)
    if not recorded:  # recovered as lost meanwhile: that record stands
        logger.warning("target run was recovered before its outcome was recorded", extra={"target_run": run.pk})
    return bool(started)


def _unclaim(runs: list[TargetRun], me: str) -> None:
    """Give back runs claimed ahead by ``me`` (those still pending): any lane may claim them again."""
    if not runs:
        return
    TargetRun.objects.filter(pk__in=[run.pk for run in runs], worker=me, status=TargetStatus.PENDING).update(
        worker="", heartbeat_at=None
    )
    for run in runs:
        Leases.release(run_id=run.pk)


def _rollback_left_open() -> None:
    """End the transaction a failed round trip left open on the control connection (or drop the connection)."""
    raw = control_db.connection
    if raw is None or raw.closed or raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        raw.rollback()
    except psycopg.Error:
        control_db.close()


@control_retry
def _claim_now(execution: MigrationExecution, me: str) -> TargetRun | None:
    skip = servers_to_skip()
    with transaction.atomic():
        return _claim(execution, me, skip)


@control_retry
def _record_and_claim_now(
    run: TargetRun,
    execution: MigrationExecution,
    me: str,
    *,
    claim: bool,
    give_back: str,
    retry_after_s: float,
    release: list[TargetRun] | None = None,
) -> TargetRun | None:
    """Record ``run``'s outcome and claim the next run in one transaction; the claimed run. ``release``: runs the
    lane claimed ahead, given back first (a failure recorded next may halt the execution and skip them)."""
    skip = servers_to_skip() if claim else []
    if not release and _at_once(run, claim=claim, give_back=give_back):
        return _record_and_claim_at_once(run, execution, me, skip)
    with transaction.atomic():
        _unclaim(release or [], me)
        count = _record(run, execution, me, give_back=give_back, retry_after_s=retry_after_s)
        claimed = _claim(execution, me, skip) if claim else None
        # The execution's row is written last, just before the commit: lanes recording at once wait on it for
        # that one statement, never for each other's claims.
        count()
        return claimed


def run_claim(*, execution: MigrationExecution, worker: str) -> TargetRun | None:
    """Claim the next run for ``worker`` (retried while the control database is unreachable); the run, now under
    lease, or None."""
    return _claimed(_claim_now(execution, worker), execution)


def run_record_and_claim(
    *,
    run: TargetRun,
    execution: MigrationExecution,
    worker: str,
    claim: bool,
    give_back: str = "",
    retry_after_s: float = 0.0,
    release: list[TargetRun] | None = None,
) -> TargetRun | None:
    """Record ``run``'s outcome and claim the next run (one transaction, retried as a whole); returns the claimed
    run, now under lease, or None when none was claimed (or ``claim`` is false). ``release``: runs the lane
    claimed ahead and gives back in the same transaction."""
    claimed = _record_and_claim_now(
        run, execution, worker, claim=claim, give_back=give_back, retry_after_s=retry_after_s, release=release
    )
    return _claimed(claimed, execution)


@control_retry
def _claim_ahead_now(execution: MigrationExecution, me: str, current: TargetRun, count: int) -> list[TargetRun]:
    return _claim_ahead(execution, me, current, count)  # one statement: its own transaction


def run_claim_ahead(
    *, execution: MigrationExecution, worker: str, current: TargetRun, count: int = 1
) -> list[TargetRun]:
    """Reserve for ``worker`` up to ``count`` runs to apply after ``current``, in the order to apply them (retried
    while the control database is unreachable): pending and under lease; none when the phase has no other pending
    run on ``current``'s server."""
    claimed = (_claimed(run, execution) for run in _claim_ahead_now(execution, worker, current, count))
    return [run for run in claimed if run is not None]


@control_retry
def run_record_and_start(*, run: TargetRun, start: TargetRun, execution: MigrationExecution, worker: str) -> bool:
    """Record ``run``'s outcome and start ``start``, the run ``worker`` claimed ahead, in its place (one
    transaction, retried as a whole; see ``_record_and_start``): whether ``start`` started."""
    return _record_and_start(run, start, execution, worker)


@control_retry
def run_unclaim(*, runs: list[TargetRun], worker: str) -> None:
    """Give back runs claimed ahead that their lane will not apply."""
    _unclaim(runs, worker)
