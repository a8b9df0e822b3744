"""Phases and waves: the last lane out of a phase opens the next one, the last out of the last phase finishes.

Opening a phase skips the runs whose dependencies did not succeed; between two waves it waits for the soak
time or a person's approval.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from migrations_runner.models import ExecutionStatus, MigrationExecution, TargetRun, TargetStatus, Waiting
from migrations_runner.services.runner.counters import counter_add, runs_close_pending
from migrations_runner.services.runner.hosts import ExecutionId, LaneHost
from migrations_runner.services.targets import finish_execution

logger = logging.getLogger(__name__)


def _wave_gate(execution: MigrationExecution, phase: int) -> str:
    """What opening ``phase`` waits for: ``Waiting.SOAK``, ``Waiting.APPROVAL`` or nothing (``""``).

    Called with the execution row locked. The soak of a wave starts when the gate is first reached (the wave
    before it is done); its end and each wave's opening are kept in ``execution.waves``.
    """
    wave = next((w for w in execution.waves if w["phase"] == phase), None)
    if wave is None:
        return Waiting.NOTHING
    now, changed = timezone.now(), []
    waiting, wait_until = Waiting.NOTHING, None
    if wave["wave"] > 1 and execution.wave_pause_s:
        if "soak_until" not in wave:
            wave["soak_until"] = (now + timedelta(seconds=execution.wave_pause_s)).isoformat()
            changed.append("waves")
        soak_until = datetime.fromisoformat(wave["soak_until"])
        if now < soak_until:
            waiting, wait_until = Waiting.SOAK, soak_until
    if not waiting and execution.wave_approval and wave["wave"] > execution.approved_wave:
        waiting = Waiting.APPROVAL
    if not waiting and "opened_at" not in wave:
        wave["opened_at"] = now.isoformat()
        changed.append("waves")
    if (execution.waiting, execution.wait_until) != (waiting, wait_until):
        if waiting:
            logger.info(
                "wave gate",
                extra={"execution": str(execution.pk), "wave": wave["wave"], "waiting": waiting},
            )
        execution.waiting, execution.wait_until = waiting, wait_until
        changed += ["waiting", "wait_until"]
    if changed:
        execution.save(update_fields=sorted(set(changed)))
    return waiting


def _skip_blocked(execution_id: ExecutionId, phase: int) -> None:
    """Skip the phase's pending runs whose dependencies did not succeed."""
    pending = list(
        TargetRun.objects.filter(execution_id=execution_id, phase=phase, status=TargetStatus.PENDING).exclude(
            depends_on=[]
        )
    )
    dep_ids = {dep for run in pending for dep in run.depends_on}
    deps: dict[int, Mapping[str, Any]] = {
        row["id"]: row
        for row in TargetRun.objects.filter(pk__in=dep_ids).values("id", "status", "connection__name", "schema_name")
    }
    now, skipped = timezone.now(), []
    for run in pending:
        blocking = (deps[d] for d in run.depends_on if d in deps and deps[d]["status"] != TargetStatus.SUCCEEDED)
        bad = next(blocking, None)
        if bad is not None:
            run.status, run.completed_at = TargetStatus.SKIPPED, now
            run.skip_reason = f"dependency {bad['connection__name']}/{bad['schema_name']} {bad['status']}"
            skipped.append(run)
    TargetRun.objects.bulk_update(skipped, ["status", "completed_at", "skip_reason"], batch_size=500)
    counter_add(execution_id=execution_id, status=TargetStatus.SKIPPED, n=len(skipped))


def execution_open(*, execution: MigrationExecution, host: LaneHost) -> None:
    """Mark an execution in progress and open its first phase (spawning its lanes), or finish it."""
    if execution.is_finished:
        return
    MigrationExecution.objects.filter(pk=execution.pk, status=ExecutionStatus.PENDING).update(
        status=ExecutionStatus.IN_PROGRESS, started_at=execution.started_at or timezone.now()
    )
    phase_advance(execution_id=execution.pk, host=host, continuing=False)


def phase_advance(*, execution_id: ExecutionId, host: LaneHost, continuing: bool) -> bool:
    """Open the next phase when the current one is done, or finish the execution; True when there is work to claim.

    ``continuing`` is true when the caller is a lane that will go on claiming: it counts as one of the lanes.
    """
    with transaction.atomic():
        execution = MigrationExecution.objects.select_for_update().get(pk=execution_id)
        if execution.is_finished:
            return False
        runs = TargetRun.objects.filter(execution_id=execution_id)
        if execution.cancel_requested:
            runs_close_pending(execution_id=execution_id, status=TargetStatus.CANCELLED, reason="execution cancelled")
        if runs.filter(status=TargetStatus.RUNNING).exists():
            return False  # a lane still at work will come back here when it is done
        opened = False
        while True:
            phase = runs.filter(status=TargetStatus.PENDING).aggregate(phase=Min("phase"))["phase"]
            if phase is None:
                execution.refresh_from_db()
                finish_execution(execution)
                return False
            if phase == execution.current_phase:
                break
            if _wave_gate(execution, phase):
                return False  # between two waves: a soak time or a person's Continue opens the next one
            _skip_blocked(execution_id, phase)
            execution.current_phase, opened = phase, True
            MigrationExecution.objects.filter(pk=execution_id).update(current_phase=phase)
        if not opened:
            return continuing  # another lane opened this phase (or a cap freed up in it): nothing to spawn
        pending = runs.filter(phase=phase, status=TargetStatus.PENDING).count()
        lanes = min(execution.batch_size, pending) - (1 if continuing else 0)
        MigrationExecution.objects.filter(pk=execution_id).update(active_at=timezone.now())
        if lanes > 0:
            host.spawn(execution_id, lanes)
        logger.info(
            "phase opened",
            extra={"execution": str(execution_id), "phase": phase, "pending": pending, "lanes": lanes + continuing},
        )
    return continuing
