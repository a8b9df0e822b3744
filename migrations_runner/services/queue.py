"""Running executions on django-q2 workers: dispatch, the worker's unit of work, leases and recovery.

``execution_dispatch`` hands target runs to the queue phase by phase, never more
than ``batch_size`` of one execution in flight nor ``MIGRATION_MAX_PER_DATABASE``
on one database server; it runs in the submitting request and again after each
target finishes. A worker claims its target run, renews a lease (heartbeat) while
it works, and records the outcome. A periodic task marks runs whose lease expired
as failed ("worker lost"): their open transaction died with the worker's database
connection, so no script is ever half-applied.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from datetime import timedelta

import psycopg
from django.conf import settings
from django.db import connection as control_db
from django.db import connections, transaction
from django.db.models import Count, Min
from django.utils import timezone
from django_q.tasks import async_task

from connections.services import connection_params
from migrations_runner import selectors
from migrations_runner.engine import apply as engine
from migrations_runner.models import ExecutionStatus, MigrationExecution, OnFailure, TargetRun, TargetStatus
from migrations_runner.services.targets import RUN_FIELDS, apply_outcome, finish_execution, target_run_apply

logger = logging.getLogger(__name__)

RUN_TARGET_TASK = "migrations_runner.tasks.run_target"
CANCEL_POLL_S = 1.0
_DISPATCH_LOCK = 0x1F0B  # PostgreSQL control database: one dispatcher at a time (SQLite serializes writers anyway)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _lock_dispatch() -> None:
    if control_db.vendor == "postgresql":
        with control_db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_DISPATCH_LOCK])


def _server_load() -> Counter:
    """Running target runs per database server, across all executions."""
    rows = (
        TargetRun.objects.filter(status=TargetStatus.RUNNING)
        .values("connection__host", "connection__port")
        .annotate(n=Count("id"))
    )
    return Counter({(row["connection__host"], row["connection__port"]): row["n"] for row in rows})


def _skip_blocked(execution: MigrationExecution, phase: int) -> None:
    """Skip the phase's pending runs whose dependencies did not succeed (once, on entering the phase)."""
    pending = list(execution.targets.filter(phase=phase, status=TargetStatus.PENDING).exclude(depends_on=[]))
    dep_ids = {dep for run in pending for dep in run.depends_on}
    deps = {
        row["id"]: row
        for row in TargetRun.objects.filter(pk__in=dep_ids).values("id", "status", "connection__name", "schema_name")
    }
    now, skipped = timezone.now(), []
    for run in pending:
        bad = next((deps[d] for d in run.depends_on if deps.get(d, {}).get("status") != TargetStatus.SUCCEEDED), None)
        if bad is not None:
            run.status, run.completed_at = TargetStatus.SKIPPED, now
            run.skip_reason = f"dependency {bad['connection__name']}/{bad['schema_name']} {bad['status']}"
            skipped.append(run)
    TargetRun.objects.bulk_update(skipped, ["status", "completed_at", "skip_reason"], batch_size=500)


def _close_pending(execution: MigrationExecution, status: str, reason: str) -> None:
    execution.targets.filter(status=TargetStatus.PENDING).update(
        status=status, skip_reason=reason, completed_at=timezone.now()
    )


def execution_dispatch(*, execution_id) -> list[int]:
    """Hand the next target runs of an execution to the queue; finish the execution when nothing is left."""
    to_enqueue: list[int] = []
    with transaction.atomic():
        _lock_dispatch()
        execution = MigrationExecution.objects.select_for_update().get(pk=execution_id)
        if execution.is_finished:
            return []
        if execution.status == ExecutionStatus.PENDING:
            execution.status, execution.started_at = ExecutionStatus.IN_PROGRESS, execution.started_at or timezone.now()
            execution.save(update_fields=["status", "started_at"])
        _recover(execution.targets.all())
        if execution.cancel_requested:
            _close_pending(execution, TargetStatus.CANCELLED, "execution cancelled")
        elif execution.on_failure == OnFailure.HALT:
            failed = execution.targets.filter(status=TargetStatus.FAILED).select_related("connection").first()
            if failed is not None:
                _close_pending(execution, TargetStatus.SKIPPED, f"halted after {failed.label} failed")
        while True:
            unfinished = execution.targets.filter(status__in=[TargetStatus.PENDING, TargetStatus.RUNNING])
            phase = unfinished.aggregate(phase=Min("phase"))["phase"]
            if phase is None:
                finish_execution(execution)
                break
            if execution.metadata.get("dispatched_phase") != phase:
                _skip_blocked(execution, phase)
                execution.metadata["dispatched_phase"] = phase
                execution.save(update_fields=["metadata"])
                continue  # the phase may now be finished (all of it skipped)
            to_enqueue = _start_runs(execution, phase, running=unfinished.filter(status=TargetStatus.RUNNING).count())
            break
        transaction.on_commit(lambda: _enqueue(to_enqueue, execution))
    return to_enqueue


def _start_runs(execution: MigrationExecution, phase: int, *, running: int) -> list[int]:
    """Mark pending runs of the phase running, within the batch size and the per-server cap; return their ids."""
    slots = execution.batch_size - running
    if slots <= 0:
        return []
    load = _server_load()
    started = []
    now = timezone.now()
    candidates = (
        execution.targets.filter(phase=phase, status=TargetStatus.PENDING).select_related("connection").order_by("id")
    )
    for run in candidates.iterator(chunk_size=200):
        server = (run.connection.host, run.connection.port)
        if load[server] >= settings.MIGRATION_MAX_PER_DATABASE:
            if len(load) == 1:
                break  # one server only, and it is full
            continue
        run.status, run.dispatched_at = TargetStatus.RUNNING, now
        run.save(update_fields=["status", "dispatched_at"])
        load[server] += 1
        started.append(run.pk)
        if len(started) == slots:
            break
    return started


def _enqueue(run_ids: list[int], execution: MigrationExecution) -> None:
    for run_id in run_ids:
        async_task(RUN_TARGET_TASK, run_id, task_name=f"target-run-{run_id}", group=str(execution.pk))


def dispatch_waiting(*, exclude=None) -> None:
    """Dispatch every execution still in progress (after a target freed a slot on some database server)."""
    for execution_id in (
        MigrationExecution.objects.filter(status=ExecutionStatus.IN_PROGRESS)
        .exclude(pk=exclude)
        .values_list("pk", flat=True)
    ):
        execution_dispatch(execution_id=execution_id)


class _Heartbeat:
    """Renews the lease of the target run this worker process is working on, from one long-lived thread."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    _current: tuple[int, str] | None = None

    @classmethod
    def _beat(cls) -> None:
        while True:
            time.sleep(settings.MIGRATION_HEARTBEAT_SECONDS)
            current = cls._current
            if current is not None:
                try:
                    TargetRun.objects.filter(pk=current[0], worker=current[1], status=TargetStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:  # a missed beat is retried at the next one; the lease tolerates several
                    logger.exception("heartbeat failed", extra={"target_run": current[0]})
                    connections.close_all()

    def __init__(self, run_id: int, worker: str) -> None:
        self.current = (run_id, worker)

    def __enter__(self) -> _Heartbeat:
        with self._lock:
            if _Heartbeat._thread is None or not _Heartbeat._thread.is_alive():
                _Heartbeat._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
                _Heartbeat._thread.start()
        _Heartbeat._current = self.current
        return self

    def __exit__(self, *exc) -> None:
        _Heartbeat._current = None


# One connection per database per worker process, reused by the targets it runs.
_sources: dict[tuple, engine.ConnectionSource] = {}


def _source_for(run: TargetRun) -> engine.ConnectionSource:
    key = (run.connection_id, run.connection.updated_at)
    if key not in _sources:
        params = connection_params(run.connection)
        _sources[key] = engine.ConnectionSource(lambda: psycopg.connect(**params.kwargs()))
    return _sources[key]


def _cancel_checker(execution_id):
    state = {"at": 0.0, "cancelled": False}

    def should_stop() -> bool:
        if not state["cancelled"] and time.monotonic() - state["at"] >= CANCEL_POLL_S:
            state["at"] = time.monotonic()
            state["cancelled"] = MigrationExecution.objects.filter(pk=execution_id, cancel_requested=True).exists()
        return state["cancelled"]

    return should_stop


def target_run_work(*, target_run_id: int) -> str:
    """The queue worker's job: claim one target run, apply it under a lease, record it, dispatch more."""
    me, now = worker_name(), timezone.now()
    claimed = TargetRun.objects.filter(pk=target_run_id, status=TargetStatus.RUNNING, started_at__isnull=True).update(
        started_at=now, heartbeat_at=now, worker=me
    )
    if not claimed:
        logger.info("target run already claimed or finished", extra={"target_run": target_run_id})
        return "not claimed"
    run = TargetRun.objects.select_related("execution", "connection", "tenant").get(pk=target_run_id)
    execution = run.execution
    try:
        sets = selectors.sets_load(types={run.database_type})
        with _Heartbeat(run.pk, me):
            outcome = target_run_apply(
                run=run,
                execution=execution,
                sets=sets,
                source=_source_for(run),
                should_stop=_cancel_checker(execution.pk),
            )
    except Exception as exc:  # a failure outside the engine must still end the target run, not leave it running
        logger.exception("target run crashed", extra={"target_run": run.pk, "target": run.label})
        outcome = engine.TargetOutcome(status="failed", error=engine.TargetError(kind="internal", message=str(exc)))
    apply_outcome(run, outcome)
    TargetRun.objects.filter(pk=run.pk, worker=me).update(**{field: getattr(run, field) for field in RUN_FIELDS})
    execution_dispatch(execution_id=execution.pk)
    dispatch_waiting(exclude=execution.pk)
    return run.status


def _recover(runs) -> int:
    """Fail running target runs whose lease expired; return how many."""
    now = timezone.now()
    lost = list(
        runs.filter(
            status=TargetStatus.RUNNING,
            started_at__isnull=False,
            heartbeat_at__lt=now - timedelta(seconds=settings.MIGRATION_LEASE_SECONDS),
        )
    )
    for run in lost:
        run.status, run.completed_at = TargetStatus.FAILED, now
        run.error = {
            "kind": "worker_lost",
            "message": f"worker lost: {run.worker} stopped renewing its lease at {run.heartbeat_at.isoformat()}",
        }
        run.duration_ms = int((now - run.started_at).total_seconds() * 1000)
        logger.error("target run lost its worker", extra={"target_run": run.pk, "worker": run.worker})
    TargetRun.objects.bulk_update(lost, ["status", "completed_at", "error", "duration_ms"])
    return len(lost)


def targets_recover_lost() -> int:
    """The periodic check: fail target runs whose worker died, then let their executions go on or finish."""
    lost = _recover(TargetRun.objects.all())
    dispatch_waiting()
    return lost
