"""Claiming target runs and recording their outcomes.

A lane claims the next pending target run of the execution's current phase with one conditional statement
(respecting the batch size and ``MIGRATION_MAX_PER_DATABASE`` across all executions), and records a run's
outcome and claims the next one in the same transaction. Each step is retried while the control database is
unreachable.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection as control_db
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from migrations_runner.models import MigrationExecution, TargetRun, TargetStatus
from migrations_runner.services.runner.control import control_retry
from migrations_runner.services.runner.counters import counter_add
from migrations_runner.services.runner.halting import after_failure
from migrations_runner.services.runner.leases import Leases
from migrations_runner.services.runner.reachability import servers_unreachable

logger = logging.getLogger(__name__)

_CLAIM_LOCK = 0x1F0C  # PostgreSQL control database: claims are serialized so the caps hold exactly

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


def _table(model: type[models.Model]) -> str:
    return control_db.ops.quote_name(model._meta.db_table)


def _claim(execution: MigrationExecution, me: str, skip: list[str]) -> int | None:
    """Claim the next pending run of the execution's current phase within both caps and on none of the ``skip``
    servers: its id, or None when none can be. The caller's transaction holds the claim lock until it commits:
    keep what follows it short."""
    runs, executions = _table(TargetRun), _table(MigrationExecution)
    execution_key = MigrationExecution._meta.pk.get_db_prep_value(execution.pk, control_db)
    # As the ORM would store it (on SQLite a text whose form must match the ORM's later comparisons).
    now = control_db.ops.adapt_datetimefield_value(timezone.now())
    lock = " FOR UPDATE OF c SKIP LOCKED" if control_db.vendor == "postgresql" else ""
    unreachable = f"AND c.server NOT IN ({', '.join(['%s'] * len(skip))})" if skip else ""
    statement = f"""
        UPDATE {runs} SET status = %s, worker = %s, started_at = %s, heartbeat_at = %s
        WHERE id = (
            SELECT c.id FROM {runs} c
            WHERE c.execution_id = %s AND c.status = %s
              AND c.phase = (SELECT e.current_phase FROM {executions} e WHERE e.id = %s AND NOT e.cancel_requested)
              AND (SELECT count(*) FROM {runs} r WHERE r.execution_id = %s AND r.status = %s) < %s
              AND c.server NOT IN (
                  SELECT r.server FROM {runs} r WHERE r.status = %s GROUP BY r.server HAVING count(*) >= %s
              )
              AND (c.retry_at IS NULL OR c.retry_at <= %s)
              {unreachable}
            ORDER BY c.id LIMIT 1{lock}
        )
        RETURNING id
    """  # noqa: S608 (table names come from the models, values are parameters)
    params = [
        TargetStatus.RUNNING,
        me,
        now,
        now,
        execution_key,
        TargetStatus.PENDING,
        execution_key,
        execution_key,
        TargetStatus.RUNNING,
        execution.batch_size,
        TargetStatus.RUNNING,
        settings.MIGRATION_MAX_PER_DATABASE,
        now,
        *skip,
    ]
    with control_db.cursor() as cursor:
        if control_db.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CLAIM_LOCK])
        cursor.execute(statement, params)
        row = cursor.fetchone()
    return None if row is None else row[0]


@control_retry
def _claimed(run_id: int | None, execution: MigrationExecution) -> TargetRun | None:
    """The run a committed claim took (read after the claim's transaction, outside its lock), now under lease."""
    if run_id is None:
        return None
    # The password stays encrypted: a lane's connection source is made once per connection (``apply._source_for``).
    run = TargetRun.objects.select_related("connection", "tenant").defer("connection__password").get(pk=run_id)
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
) -> None:
    """Write a run's outcome and the execution's counters (one transaction, the caller's); a run given back goes
    to pending instead: ``unreachable`` (its database server was never reached) or ``deferred`` (a table lock
    was held: it may be claimed again at ``retry_at``, by any lane, while this one runs others)."""
    if give_back:
        deferred = _deferred_fields(run, retry_after_s) if give_back == "deferred" else {}
        fields = {**PENDING_FIELDS, **deferred}
        TargetRun.objects.filter(pk=run.pk, worker=me, status=TargetStatus.RUNNING).update(**fields)
        Leases.release(run_id=run.pk)
        return
    recorded = TargetRun.objects.filter(pk=run.pk, worker=me, status=TargetStatus.RUNNING).update(
        **{name: getattr(run, name) for name in OUTCOME_FIELDS}
    )
    Leases.release(run_id=run.pk)
    if not recorded:  # recovered as lost meanwhile: that record stands
        logger.warning("target run was recovered before its outcome was recorded", extra={"target_run": run.pk})
        return
    timing = {}
    if run.status == TargetStatus.SUCCEEDED and run.duration_ms is not None:
        timing = {"run_duration_ms": F("run_duration_ms") + run.duration_ms, "runs_timed": F("runs_timed") + 1}
    counter_add(execution_id=execution.pk, status=run.status, n=1, active_at=timezone.now(), **timing)
    if run.status == TargetStatus.FAILED:
        after_failure(run=run, execution=execution)


@control_retry
def _claim_id(execution: MigrationExecution, me: str) -> int | None:
    skip = list(servers_unreachable())
    with transaction.atomic():
        return _claim(execution, me, skip)


@control_retry
def _record_and_claim_id(
    run: TargetRun, execution: MigrationExecution, me: str, *, claim: bool, give_back: str, retry_after_s: float
) -> int | None:
    """Record ``run``'s outcome and claim the next run in one transaction; the id of the claimed run."""
    skip = list(servers_unreachable()) if claim else []
    with transaction.atomic():
        _record(run, execution, me, give_back=give_back, retry_after_s=retry_after_s)
        return _claim(execution, me, skip) if claim else None


def run_claim(*, execution: MigrationExecution, worker: str) -> TargetRun | None:
    """Claim the next run for ``worker`` and read it (each step retried alone); the run, now under lease, or None."""
    run_id = _claim_id(execution, worker)
    return _claimed(run_id, execution)


def run_record_and_claim(
    *,
    run: TargetRun,
    execution: MigrationExecution,
    worker: str,
    claim: bool,
    give_back: str = "",
    retry_after_s: float = 0.0,
) -> TargetRun | None:
    """Record ``run``'s outcome and claim the next run (one transaction, retried as a whole), then read the
    claimed run (retried alone); returns the claimed run, or None when none was claimed (or ``claim`` is false)."""
    run_id = _record_and_claim_id(run, execution, worker, claim=claim, give_back=give_back, retry_after_s=retry_after_s)
    return _claimed(run_id, execution)
