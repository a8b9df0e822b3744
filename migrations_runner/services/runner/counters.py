"""The execution's counters of finished target runs, and ending its pending runs in bulk."""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db import connection as control_db
from django.db.models import F
from django.utils import timezone

from migrations_runner.models import MigrationExecution, TargetRun, TargetStatus
from migrations_runner.services.runner.hosts import ExecutionId

COUNTER_OF: dict[str, str] = {
    TargetStatus.SUCCEEDED: "targets_succeeded",
    TargetStatus.FAILED: "targets_failed",
    TargetStatus.SKIPPED: "targets_skipped",
    TargetStatus.CANCELLED: "targets_cancelled",
}


def counter_add(*, execution_id: ExecutionId, status: str, n: int, **extra: Any) -> None:
    """Add ``n`` to the execution's counter of ``status`` (and set ``extra`` fields) in one statement."""
    changes = {**extra}
    if n and status in COUNTER_OF:
        changes[COUNTER_OF[status]] = F(COUNTER_OF[status]) + n
    if changes:
        MigrationExecution.objects.filter(pk=execution_id).update(**changes)


_statements: dict[str, str] = {}  # per outcome status, composed once per process (names from the models)


def outcome_count_assignments(status: str) -> str:
    """The ``SET`` list that adds one recorded outcome of ``status`` to an execution's counters and timing and marks
    it active; its parameters are ``outcome_count_params``."""
    counter = control_db.ops.quote_name(COUNTER_OF[status]) if status in COUNTER_OF else None
    count = f"{counter} = {counter} + 1, " if counter else ""
    return f"{count}active_at = %s, run_duration_ms = run_duration_ms + %s, runs_timed = runs_timed + %s"


def outcome_count_params(run: TargetRun) -> list[Any]:
    """The parameters of ``outcome_count_assignments`` for ``run``'s outcome, recorded now."""
    timed = run.status == TargetStatus.SUCCEEDED and run.duration_ms is not None
    now = connections[DEFAULT_DB_ALIAS].ops.adapt_datetimefield_value(timezone.now())  # the proxy resolves it once
    return [now, run.duration_ms if timed else 0, 1 if timed else 0]


def outcome_count(*, execution_id: ExecutionId, run: TargetRun) -> None:
    """Add one recorded outcome to the execution's counters and timing, and mark it active (one statement run
    for every target: composed once, not through the ORM)."""
    statement = _statements.get(run.status)
    if statement is None:
        table = control_db.ops.quote_name(MigrationExecution._meta.db_table)
        statement = f"UPDATE {table} SET {outcome_count_assignments(run.status)} WHERE id = %s"  # noqa: S608
        _statements[run.status] = statement
    execution_key = MigrationExecution._meta.pk.get_db_prep_value(execution_id, control_db)
    with control_db.cursor() as cursor:
        cursor.execute(statement, [*outcome_count_params(run), execution_key])


def runs_close_pending(*, execution_id: ExecutionId, status: str, reason: str) -> int:
    """End the pending runs of an execution with ``status`` and ``reason``; return how many."""
    pending = TargetRun.objects.filter(execution_id=execution_id, status=TargetStatus.PENDING)
    n = pending.update(status=status, skip_reason=reason, completed_at=timezone.now())
    counter_add(execution_id=execution_id, status=status, n=n)
    return n
