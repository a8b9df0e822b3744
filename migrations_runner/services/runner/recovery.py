"""Recovery: target runs whose worker stopped renewing their lease fail as lost, and executions that have work
but no lane get lanes again.

A lane that dies leaves its target run ``running`` with a lease that stops being renewed; it is failed as lost
("worker lost", with what the target's history shows it applied) by any lane that waits for a slot (the lost
runs may hold the slots it waits for) and by ``targets_recover_lost``, which also spawns lanes again when an
execution has work but no lane.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import psycopg
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from psycopg import sql

from connections.services import connection_params
from migrations_runner.engine import history
from migrations_runner.models import ExecutionStatus, MigrationExecution, TargetRun, TargetStatus
from migrations_runner.selectors.workers import lane_waiting
from migrations_runner.services.runner.counters import counter_add
from migrations_runner.services.runner.halting import after_failure
from migrations_runner.services.runner.hosts import QueueHost
from migrations_runner.services.runner.phases import phase_advance

logger = logging.getLogger(__name__)


def _applied_under(run: TargetRun) -> list[dict]:
    """What the target's history shows this run's execution applied (a lost worker could not report it)."""
    params = connection_params(run.connection)
    query = sql.SQL(
        "SELECT version, script, execution_time_ms, type FROM {} "
        "WHERE execution_id = %s AND success AND type = 'SQL' ORDER BY installed_rank"
    ).format(history.table(run.schema_name))
    try:
        with psycopg.connect(**params.kwargs(autocommit=True, connect_timeout=min(5, params.connect_timeout))) as conn:
            rows = conn.execute(query, [run.execution_id]).fetchall()
    except psycopg.Error as exc:
        logger.warning(
            "could not read the history of a lost target run",
            extra={"target_run": run.pk, "target": run.label, "error": str(exc.sqlstate or "connection")},
        )
        return []
    return [{"version": v, "script": s, "duration_ms": ms, "kind": kind} for v, s, ms, kind in rows]


def _fail_lost(run: TargetRun, now: datetime) -> None:
    """Fail ``run`` as lost (its lease expired) with what its target's history shows it applied."""
    # A running run always has both: the claim sets them.
    assert run.heartbeat_at is not None
    assert run.started_at is not None
    applied = _applied_under(run)
    run.status, run.completed_at = TargetStatus.FAILED, now
    run.applied_versions = applied
    if applied:
        run.to_version = applied[-1]["version"]
    run.error = {
        "kind": "worker_lost",
        "message": f"worker lost: {run.worker} stopped renewing its lease at {run.heartbeat_at.isoformat()}",
    }
    run.duration_ms = int((now - run.started_at).total_seconds() * 1000)
    with transaction.atomic():
        if not TargetRun.objects.filter(pk=run.pk, status=TargetStatus.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=run.status,
            completed_at=now,
            applied_versions=run.applied_versions,
            to_version=run.to_version,
            error=run.error,
            duration_ms=run.duration_ms,
        ):
            return  # another lane or the recovery task failed it first (or its worker came back)
        counter_add(execution_id=run.execution_id, status=TargetStatus.FAILED, n=1)
        after_failure(run=run, execution=run.execution)
    logger.error(
        "target run lost its worker",
        extra={"target_run": run.pk, "target": run.label, "worker": run.worker, "applied": len(applied)},
    )


def _lost(now: datetime) -> QuerySet[TargetRun]:
    lease = timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
    return TargetRun.objects.filter(status=TargetStatus.RUNNING, heartbeat_at__lt=now - lease)


def _reserved_lost(now: datetime) -> QuerySet[TargetRun]:
    """Pending runs claimed ahead by a lane that stopped renewing their lease (``ahead``)."""
    lease = timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
    return TargetRun.objects.filter(status=TargetStatus.PENDING, heartbeat_at__lt=now - lease).exclude(worker="")


def runs_fail_lost() -> int:
    """Fail the running target runs whose lease expired (their worker is lost), and give back the runs such a
    worker had claimed ahead (they never started); returns how many runs were failed."""
    now = timezone.now()
    given_back = _reserved_lost(now).update(worker="", heartbeat_at=None)
    if given_back:
        logger.warning("runs claimed ahead by a lost worker given back", extra={"target_runs": given_back})
    lost = list(_lost(now).select_related("connection", "execution"))
    for run in lost:
        _fail_lost(run, now)
    return len(lost)


def runs_fail_lost_if_any() -> int:
    """``runs_fail_lost`` behind cheap queries, for lanes that look often."""
    now = timezone.now()
    return runs_fail_lost() if _lost(now).exists() or _reserved_lost(now).exists() else 0


def targets_recover_lost() -> int:
    """The periodic check: fail runs whose lease expired, then restart executions that have work and no lane.

    Returns how many target runs were recovered.
    """
    recovered = runs_fail_lost()
    now = timezone.now()
    lease = timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
    host = QueueHost()
    for execution in MigrationExecution.objects.filter(status=ExecutionStatus.IN_PROGRESS):
        runs = TargetRun.objects.filter(execution_id=execution.pk)
        if runs.filter(status=TargetStatus.RUNNING).exists():
            continue
        stalled = execution.active_at is None or execution.active_at < now - lease
        has_work = runs.filter(phase=execution.current_phase, status=TargetStatus.PENDING).exists()
        if has_work and (not stalled or lane_waiting(execution_id=execution.pk)):
            continue
        if has_work:
            with transaction.atomic():
                pending = runs.filter(phase=execution.current_phase, status=TargetStatus.PENDING).count()
                MigrationExecution.objects.filter(pk=execution.pk).update(active_at=now)
                host.spawn(execution.pk, min(execution.batch_size, pending))
            logger.warning(
                "execution had work and no lane at work: lanes spawned again",
                extra={"execution": str(execution.pk), "phase": execution.current_phase},
            )
        else:
            phase_advance(execution_id=execution.pk, host=host, continuing=False)
    return recovered
