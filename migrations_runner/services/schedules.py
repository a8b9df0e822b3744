"""Migration schedules, kept in sync with django-q2's ``Schedule`` that fires them."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from croniter import CroniterBadDateError, croniter
from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule

from infra_site.updates import model_update
from migrations_runner.exceptions import InvalidSchedule
from migrations_runner.models import MigrationSchedule, Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.selectors import selection_unknown
from migrations_runner.services.executions import execution_start

logger = logging.getLogger(__name__)

FIRE_TASK = "migrations_runner.tasks.fire_schedule"
RECOVERY_TASK = "migrations_runner.tasks.recover_lost_targets"
RECOVERY_SCHEDULE = "infra: recover lost target runs"
EDITABLE = ("name", "cron_expression", "run_at", "enabled")
CRON_FIELDS = ("minute", "hour", "day", "month", "weekday")


def _cron_problem(expression: str) -> str | None:
    """Why ``expression`` cannot be a schedule's: not cron, not five fields (a seconds field would start a run
    every scheduler cycle), or no date ever matches it (February 30th)."""
    if not croniter.is_valid(expression):
        return f"{expression!r} is not a valid cron expression ({' '.join(CRON_FIELDS)})."
    fields = expression.split()
    if not expression.startswith("@") and len(fields) != len(CRON_FIELDS):
        return f"{expression!r} has {len(fields)} fields; give {len(CRON_FIELDS)}: {' '.join(CRON_FIELDS)}."
    try:
        croniter(expression, timezone.localtime()).get_next(datetime)
    except CroniterBadDateError:
        return f"{expression!r} never fires: no date matches it."
    return None


def _validate(schedule: MigrationSchedule, selection: TargetSelection | None, options: ExecutionOptions) -> None:
    """Raise ``InvalidSchedule`` naming each wrong field (the execution options' own refusals included); the names
    in a ``selection`` being set must exist."""
    problems: dict[str, list[str]] = options.errors()
    cron_problem = _cron_problem(schedule.cron_expression) if schedule.cron_expression else None
    if bool(schedule.cron_expression) == bool(schedule.run_at):
        problems["cron_expression"] = ["Give either a cron expression or a run_at time, not both or neither."]
    elif cron_problem:
        problems["cron_expression"] = [cron_problem]
    elif schedule.run_at and schedule.run_at <= timezone.now():
        problems["run_at"] = [f"run_at {schedule.run_at.isoformat()} is in the past."]
    if selection is not None:
        problems.update(selection_unknown(selection))
    if problems:
        field, messages = next(iter(problems.items()))
        raise InvalidSchedule(f"Invalid schedule: {field}: {messages[0]}", details=problems)


def _next_run(schedule: MigrationSchedule) -> datetime:
    if schedule.run_at:
        return schedule.run_at
    return croniter(schedule.cron_expression, timezone.localtime()).get_next(datetime)


def _sync(schedule: MigrationSchedule) -> None:
    """Create, update or remove the django-q2 schedule that fires ``schedule``."""
    if not schedule.enabled:
        if schedule.q_schedule_id:
            Schedule.objects.filter(pk=schedule.q_schedule_id).delete()
            schedule.q_schedule = None
            schedule.save(update_fields=["q_schedule"])
        return
    values = {
        "name": f"migration schedule {schedule.name}",
        "func": FIRE_TASK,
        "args": repr((schedule.pk,)),
        "schedule_type": Schedule.ONCE if schedule.run_at else Schedule.CRON,
        "cron": schedule.cron_expression or None,
        "repeats": 1 if schedule.run_at else -1,
        "next_run": _next_run(schedule),
    }
    if schedule.q_schedule_id:
        Schedule.objects.filter(pk=schedule.q_schedule_id).update(**values)
    else:
        schedule.q_schedule = Schedule.objects.create(**values)
        schedule.save(update_fields=["q_schedule"])


def _select(schedule: MigrationSchedule, selection: TargetSelection) -> None:
    schedule.scope, schedule.filters = selection.scope, selection.as_filters()


def schedule_create(
    *,
    actor: str,
    name: str,
    selection: TargetSelection | None = None,
    options: ExecutionOptions | None = None,
    cron_expression: str = "",
    run_at: datetime | None = None,
    enabled: bool = True,
) -> MigrationSchedule:
    """Create a schedule (cron or one-off ``run_at``) that starts executions over ``selection`` (default: the
    whole fleet) with ``options`` (default: the defaults), and its django-q2 schedule; return it."""
    options = options or ExecutionOptions()
    schedule = MigrationSchedule(
        created_by=actor,
        name=name,
        cron_expression=cron_expression or "",
        run_at=run_at,
        enabled=enabled,
        options=options.as_dict(),
    )
    selection = selection or TargetSelection()
    _select(schedule, selection)
    _validate(schedule, selection, options)
    if MigrationSchedule.objects.filter(name=schedule.name).exists():
        raise InvalidSchedule(f"A schedule named {schedule.name!r} exists.", details={"name": [schedule.name]})
    with transaction.atomic():
        schedule.save()
        _sync(schedule)
    logger.info("schedule created", extra={"schedule": schedule.name, "actor": actor})
    return schedule


def schedule_update(
    *,
    schedule: MigrationSchedule,
    actor: str,
    selection: TargetSelection | None = None,
    options: ExecutionOptions | None = None,
    **changes: Any,
) -> MigrationSchedule:
    """Change a schedule (its selection, options, ``EDITABLE`` timing, enabling or disabling) and its django-q2
    schedule; return it."""
    if "cron_expression" in changes:
        changes["cron_expression"] = changes["cron_expression"] or ""
    model_update(schedule, fields=EDITABLE, changes=changes)
    if selection is not None:
        _select(schedule, selection)
    if options is not None:
        schedule.options = options.as_dict()
    _validate(schedule, selection, options or ExecutionOptions.from_dict(schedule.options))
    with transaction.atomic():
        schedule.save()
        _sync(schedule)
    logger.info("schedule updated", extra={"schedule": schedule.name, "actor": actor, "enabled": schedule.enabled})
    return schedule


def schedule_delete(*, schedule: MigrationSchedule, actor: str) -> None:
    """Delete a schedule and its django-q2 schedule."""
    with transaction.atomic():
        if schedule.q_schedule_id:
            Schedule.objects.filter(pk=schedule.q_schedule_id).delete()
        schedule.delete()
    logger.info("schedule deleted", extra={"schedule": schedule.name, "actor": actor})


def schedule_fire(*, schedule_id: int) -> str:
    """Start the execution of a schedule with its selection and options (executed_by ``schedule:<name>``);
    return the execution's id."""
    schedule = MigrationSchedule.objects.filter(pk=schedule_id, enabled=True).first()
    if schedule is None:
        return "disabled or deleted"
    execution = execution_start(
        selection=schedule.selection,
        options=ExecutionOptions.from_dict(schedule.options),
        actor=f"schedule:{schedule.name}",
        origin=Origin.SCHEDULE,
    )
    schedule.last_execution, schedule.last_fired_at = execution, timezone.now()
    update = ["last_execution", "last_fired_at"]
    if schedule.run_at:
        schedule.enabled = False
        update.append("enabled")
    schedule.save(update_fields=update)
    logger.info("schedule fired", extra={"schedule": schedule.name, "execution": str(execution.pk)})
    return str(execution.pk)


def ensure_recovery_schedule() -> None:
    """Make sure the periodic lost-target check exists (django-q2's scheduler runs it about every 30 s)."""
    Schedule.objects.update_or_create(
        name=RECOVERY_SCHEDULE,
        defaults={
            "func": RECOVERY_TASK,
            "schedule_type": Schedule.CRON,
            "cron": "* * * * * */10",
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )
