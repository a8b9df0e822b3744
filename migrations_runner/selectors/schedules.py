"""Reads of the migration schedules and of the executions they started. Only the control database is read."""

from __future__ import annotations

from django.db.models import QuerySet

from migrations_runner.exceptions import ScheduleNotFound
from migrations_runner.models import MigrationExecution, MigrationSchedule


def schedule_list() -> QuerySet[MigrationSchedule]:
    """Return the schedules with their task queue schedule."""
    return MigrationSchedule.objects.select_related("q_schedule").all()


def schedule_get(*, schedule_id: int | str) -> MigrationSchedule:
    """Return a schedule by id; raise ``ScheduleNotFound``."""
    try:
        return MigrationSchedule.objects.get(pk=int(schedule_id))
    except (MigrationSchedule.DoesNotExist, ValueError) as exc:
        raise ScheduleNotFound(f"No schedule with id {schedule_id}.", details={"id": str(schedule_id)}) from exc


def schedule_executions(*, schedule: MigrationSchedule, limit: int = 20) -> QuerySet[MigrationExecution]:
    """The latest executions a schedule started (``executed_by`` is ``schedule:<name>``)."""
    return MigrationExecution.objects.filter(executed_by=f"schedule:{schedule.name}").order_by("-created_at")[:limit]
