"""Database servers that lanes could not reach: marked in the shared cache, probed, and failed after a wait.

A target whose database server cannot be reached before anything ran on it goes back to pending, and the
server is marked unreachable: lanes claim no target of that server until a probe reaches it again, and fail
its pending targets once it stayed unreachable for ``MIGRATION_FLEET_DB_WAIT`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from connections.services import connection_params
from migrations_runner.models import MigrationExecution, TargetRun, TargetStatus
from migrations_runner.services.runner.control import control_retry
from migrations_runner.services.runner.counters import counter_add
from migrations_runner.services.runner.halting import after_failure

logger = logging.getLogger(__name__)

UNREACHABLE_KEY = "migrations:fleet-unreachable"  # {server: {"since": epoch seconds, "error": str}}
PROBE_TIMEOUT_S = 2
MARKS_RECHECK_S = 1.0  # how stale a lane's view of the marks may be when it claims (its first claim reads them)
_local = threading.local()  # per lane thread: (read at, servers) of the marks its claims skip


def servers_unreachable() -> dict[str, dict[str, Any]]:
    """The database servers marked unreachable: {server: {"since": epoch seconds, "error": message}}."""
    return cache.get(UNREACHABLE_KEY) or {}


def servers_to_skip() -> list[str]:
    """The servers a lane's claims skip: the marks, read from the shared cache at most once per
    ``MARKS_RECHECK_S`` per lane (a claim on a server marked meanwhile only gives its target back)."""
    now = time.monotonic()
    seen = getattr(_local, "marks", None)
    if seen is None or now - seen[0] >= MARKS_RECHECK_S:
        seen = _local.marks = (now, list(servers_unreachable()))
    return seen[1]


def lane_marks_forget() -> None:
    """The next claim of this lane thread reads the marks afresh (a lane starts, or it changed them)."""
    _local.marks = None


def _store_unreachable(marks: dict[str, dict[str, Any]]) -> None:
    lane_marks_forget()
    if marks:
        cache.set(UNREACHABLE_KEY, marks, timeout=settings.MIGRATION_FLEET_DB_WAIT + 300)
    else:
        cache.delete(UNREACHABLE_KEY)


@control_retry
def server_mark_unreachable(*, run: TargetRun) -> None:
    """Lanes stop claiming the targets of ``run``'s server (which it could not reach) until a probe reaches it."""
    marks = servers_unreachable()
    if run.server in marks:
        return
    error = (run.error or {}).get("message", "")[:300]
    marks[run.server] = {"since": time.time(), "error": error}
    _store_unreachable(marks)
    logger.warning(
        "database server unreachable: its targets wait",
        extra={"server": run.server, "target": run.label, "wait_s": settings.MIGRATION_FLEET_DB_WAIT},
    )


def _reachable(run: TargetRun) -> bool:
    """One connection attempt to ``run``'s database, closed at once."""
    params = connection_params(run.connection)
    try:
        with psycopg.connect(**params.kwargs(connect_timeout=min(PROBE_TIMEOUT_S, params.connect_timeout))):
            return True
    except psycopg.Error:
        return False


@control_retry
def servers_wait_for(*, execution: MigrationExecution) -> None:
    """For each unreachable server holding pending runs of the execution: probe it (and lift its mark when it
    answers), or fail those runs once it stayed unreachable for ``MIGRATION_FLEET_DB_WAIT`` seconds."""
    marks = servers_unreachable()
    if not marks:
        return
    pending = TargetRun.objects.filter(execution_id=execution.pk, status=TargetStatus.PENDING, server__in=list(marks))
    for server in set(pending.values_list("server", flat=True).distinct()):
        mark = marks[server]
        waited = time.time() - mark["since"]
        probe = pending.filter(server=server).select_related("connection").first()
        if probe is not None and _reachable(probe):
            _lift(server)
            logger.info("database server reachable again", extra={"server": server, "waited_s": round(waited)})
        elif waited >= settings.MIGRATION_FLEET_DB_WAIT:
            _fail_unreachable(execution, server, f"database server unreachable for {waited:.0f} s: {mark['error']}")
            _lift(server)  # the next execution's targets try it again (and wait again) rather than fail untried


def _lift(server: str) -> None:
    marks = servers_unreachable()
    if marks.pop(server, None) is not None:
        _store_unreachable(marks)


def _fail_unreachable(execution: MigrationExecution, server: str, message: str) -> None:
    """Fail the execution's pending runs on ``server`` with ``message`` (kind ``connection``)."""
    now = timezone.now()
    with transaction.atomic():
        runs = list(
            TargetRun.objects.select_related("connection", "execution").filter(
                execution_id=execution.pk, status=TargetStatus.PENDING, server=server
            )
        )
        failed = TargetRun.objects.filter(pk__in=[run.pk for run in runs], status=TargetStatus.PENDING).update(
            status=TargetStatus.FAILED, completed_at=now, error={"kind": "connection", "message": message}
        )
        if not failed:
            return
        counter_add(execution_id=execution.pk, status=TargetStatus.FAILED, n=failed, active_at=now)
        for run in {run.wave: run for run in runs}.values():  # one per wave: its failure budget is checked once
            after_failure(run=run, execution=run.execution)
    logger.error(
        "targets failed: their database server stayed unreachable",
        extra={"execution": str(execution.pk), "server": server, "targets": failed},
    )
