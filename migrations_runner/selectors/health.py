"""Whether migrations can run: the sets on disk, the dependency settings, and executions stuck in the control
database. No target database is read."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from migrations_runner.checks import check_dependencies
from migrations_runner.models import ExecutionStatus, MigrationExecution
from migrations_runner.selectors.sets import sets_read

STUCK_AFTER = timedelta(hours=6)


def migrations_health() -> dict[str, Any]:
    """Whether migrations can run: valid sets, a sane dependency DAG, and no execution stuck for hours."""
    sets = sets_read(settings.MIGRATIONS_DIR)
    problems = [f"{t}/{p}" for t, s in sets.items() for p in s.problems]
    problems += [error.msg for error in check_dependencies()]
    stuck = MigrationExecution.objects.filter(
        status__in=[ExecutionStatus.PENDING, ExecutionStatus.IN_PROGRESS], created_at__lt=timezone.now() - STUCK_AFTER
    ).count()
    running = MigrationExecution.objects.filter(status=ExecutionStatus.IN_PROGRESS).count()
    return {
        "status": "healthy" if not problems and not stuck else "unhealthy",
        "timestamp": timezone.now(),
        "sets": {
            t: {"versions": len(s.versions), "latest": str(s.latest) if s.latest else None} for t, s in sets.items()
        },
        "problems": problems,
        "executions_in_progress": running,
        "executions_stuck": stuck,
    }
