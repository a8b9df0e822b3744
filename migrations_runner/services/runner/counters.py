"""The execution's counters of finished target runs, and ending its pending runs in bulk."""

from __future__ import annotations

from typing import Any

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


def runs_close_pending(*, execution_id: ExecutionId, status: str, reason: str) -> int:
    """End the pending runs of an execution with ``status`` and ``reason``; return how many."""
    pending = TargetRun.objects.filter(execution_id=execution_id, status=TargetStatus.PENDING)
    n = pending.update(status=status, skip_reason=reason, completed_at=timezone.now())
    counter_add(execution_id=execution_id, status=status, n=n)
    return n
