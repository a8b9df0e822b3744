"""Reads of the signals the lanes leave: live leases of running targets and the shared cache's "a lane waits"
marks; from them, whether an execution waits for a worker. Only the control database and the cache are read."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from migrations_runner.models import MigrationExecution, TargetRun, TargetStatus


def lane_waiting_key(execution_id: uuid.UUID | str) -> str:
    """The cache key under which a lane of the execution says that it is alive and waits for a slot."""
    return f"migrations:lane-waiting:{execution_id}"


def lane_waiting(*, execution_id: uuid.UUID | str) -> bool:
    """Whether a lane of the execution said lately that it waits (for a database slot or server)."""
    return cache.get(lane_waiting_key(execution_id)) is not None


def executions_waiting_for_worker(
    *, executions: list[MigrationExecution], pending: dict[uuid.UUID, int]
) -> list[MigrationExecution]:
    """``execution_waiting_for_worker`` over many executions in two reads (live leases, waiting lanes), whatever
    their number; ``pending`` maps an execution's id to its count of runs not yet taken."""
    candidates = [e for e in executions if not e.is_finished and not e.waiting and pending.get(e.pk)]
    if not candidates:
        return []
    lease = timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
    alive = set(
        TargetRun.objects.filter(
            execution_id__in=[e.pk for e in candidates],
            status=TargetStatus.RUNNING,
            heartbeat_at__gte=timezone.now() - lease,
        )
        .order_by()
        .values_list("execution_id", flat=True)
        .distinct()
    )
    waiting_keys = {lane_waiting_key(e.pk): e.pk for e in candidates if e.pk not in alive}
    lanes_waiting = {waiting_keys[key] for key in cache.get_many(list(waiting_keys))} if waiting_keys else set()
    wait = timedelta(seconds=settings.MIGRATION_WORKER_WAIT)
    now = timezone.now()
    return [
        e
        for e in candidates
        if e.pk not in alive
        and e.pk not in lanes_waiting
        and now - (e.active_at or e.started_at or e.created_at) > wait
    ]


def execution_waiting_for_worker(*, execution: MigrationExecution, running: int, pending: int, leased: bool) -> bool:
    """Whether an execution has work that no worker has taken up for ``MIGRATION_WORKER_WAIT`` seconds.

    A run whose lease expired has no worker: it does not count as running (``leased``: one of the running runs
    holds a live lease, as ``executions_running`` reads it). A lane waiting for a slot does.
    """
    if execution.is_finished or execution.waiting or not pending:
        return False
    if running and leased:
        return False
    if lane_waiting(execution_id=execution.pk):
        return False
    since = execution.active_at or execution.started_at or execution.created_at
    return timezone.now() - since > timedelta(seconds=settings.MIGRATION_WORKER_WAIT)
