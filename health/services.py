"""Writes of the health app: the periodic connection check, its snapshots, their pruning, its schedule, and
the claims that bound the live probes of the health endpoints."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta
from typing import cast

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django_q.models import Schedule

from connections import selectors as registry
from connections import services as registry_services
from health.models import CheckRun, ConnectionSnapshot

logger = logging.getLogger(__name__)

CHECK_TASK = "health.tasks.check_connections"
CHECK_SCHEDULE = "infra: connection health checks"
# Connections probed at once by the periodic check; each probe is bounded by the connection's connect_timeout.
CHECK_PARALLELISM = 16


def live_probe_claim(*, user_id: int) -> bool:
    """Take the live probe of the connections for this user: True at most once per
    ``HEALTH_LIVE_PROBE_INTERVAL`` seconds (the shared cache keeps the claim, so every web process agrees)."""
    interval = settings.HEALTH_LIVE_PROBE_INTERVAL
    if interval == 0:
        return True
    return cache.add(f"health-live-probe:{user_id}", 1, timeout=interval)


def snapshots_prune(*, now=None) -> int:
    """Delete snapshots and check runs older than ``HEALTH_SNAPSHOT_RETENTION_DAYS``; return the snapshots deleted."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.HEALTH_SNAPSHOT_RETENTION_DAYS)
    deleted, _ = ConnectionSnapshot.objects.filter(checked_at__lt=cutoff).delete()
    CheckRun.objects.filter(finished_at__lt=cutoff).delete()
    return deleted


def connections_check() -> CheckRun:
    """Probe every active connection, store each result on the connection and as a snapshot, prune old ones.

    The probing and the connection's health fields are ``connection_test_many``'s (the admin's test action
    and the API's test use it too); this adds the history row.
    """
    started_at = timezone.now()
    results = registry_services.connection_test_many(
        connections=registry.connection_list(is_active=True), parallelism=CHECK_PARALLELISM
    )
    ConnectionSnapshot.objects.bulk_create(
        ConnectionSnapshot(
            connection=connection,
            checked_at=cast(datetime, connection.checked_at),  # connection_test_many() has just set it
            is_healthy=result.ok,
            response_time_ms=result.response_time_ms,
            error_cause=result.cause,
            error=connection.error,
            server_version=result.server_version[:255],
        )
        for connection, result in results
    )
    unhealthy = sum(1 for _, result in results if not result.ok)
    run = CheckRun.objects.create(
        started_at=started_at,
        finished_at=timezone.now(),
        connections_checked=len(results),
        connections_unhealthy=unhealthy,
        snapshots_pruned=snapshots_prune(),
        worker=f"{socket.gethostname()}:{os.getpid()}"[:128],
    )
    logger.info(
        "connection health check finished",
        extra={"connections": run.connections_checked, "unhealthy": unhealthy, "pruned": run.snapshots_pruned},
    )
    return run


def _schedule_timing(interval: int) -> dict:
    """django-q2 schedule fields that fire every ``interval`` seconds (whole minutes from 60 s on)."""
    if interval < 60:
        return {"schedule_type": Schedule.CRON, "cron": f"* * * * * */{interval}", "minutes": None}
    return {"schedule_type": Schedule.MINUTES, "minutes": round(interval / 60), "cron": None}


def ensure_health_schedule() -> Schedule:
    """Create or update the periodic connection check's django-q2 schedule from ``HEALTH_CHECK_INTERVAL``."""
    schedule, _ = Schedule.objects.update_or_create(
        name=CHECK_SCHEDULE,
        defaults={
            "func": CHECK_TASK,
            "repeats": -1,
            "next_run": timezone.now(),
            **_schedule_timing(settings.HEALTH_CHECK_INTERVAL),
        },
    )
    return schedule
