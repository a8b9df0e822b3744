"""What a failed target run does to its execution: halt it under ``on_failure=halt`` or an exceeded budget."""

from __future__ import annotations

import logging

from migrations_runner.models import MigrationExecution, OnFailure, TargetRun, TargetStatus
from migrations_runner.services.runner.counters import runs_close_pending
from migrations_runner.services.runner.hosts import ExecutionId
from migrations_runner.services.waves import Size, budget_exceeded

logger = logging.getLogger(__name__)


def after_failure(*, run: TargetRun, execution: MigrationExecution) -> None:
    """A run failed: halt under ``on_failure=halt``, or when its wave's failures exceed the failure budget."""
    if execution.on_failure == OnFailure.HALT:
        _halt(run)
    elif run.wave and execution.waves:
        _check_budget(run, execution)


def _halt(run: TargetRun) -> None:
    """``on_failure=halt``: skip everything still pending, and say why on the execution."""
    _halt_with(run.execution_id, f"halted after {run.label} failed")


def _halt_with(execution_id: ExecutionId, reason: str) -> None:
    runs_close_pending(execution_id=execution_id, status=TargetStatus.SKIPPED, reason=reason)
    MigrationExecution.objects.filter(pk=execution_id, error="").update(error=reason)


def _check_budget(run: TargetRun, execution: MigrationExecution) -> None:
    """Halt the execution when the failures of ``run``'s wave exceed the wave's failure budget."""
    size = next((w["size"] for w in execution.waves if w["wave"] == run.wave), 0)
    failed = TargetRun.objects.filter(execution_id=execution.pk, wave=run.wave, status=TargetStatus.FAILED)
    count = failed.count()
    budget = Size.parse(execution.failure_budget or "0", field_name="failure_budget")
    if not budget_exceeded(budget, failed=count, size=size):
        return
    shown = [f"{name}/{schema}" for name, schema in failed.values_list("connection__name", "schema_name")[:10]]
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    reason = (
        f"halted: wave {run.wave} exceeded its failure budget ({count} of {size} failed, budget {budget}): "
        f"{', '.join(shown)}{more}"
    )
    _halt_with(execution.pk, reason)
    logger.error(
        "wave failure budget exceeded",
        extra={"execution": str(execution.pk), "wave": run.wave, "failed": count, "size": size, "budget": str(budget)},
    )
