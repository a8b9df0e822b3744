"""The in-process runner: an execution's targets on a thread pool in this process (``--sync``, tests, provisioning)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import psycopg
from django.utils import timezone

from connections.models import DatabaseConnection
from connections.services import connection_params
from migrations_runner import selectors
from migrations_runner.engine import apply as engine
from migrations_runner.models import ExecutionStatus, MigrationExecution, OnFailure, TargetRun, TargetStatus
from migrations_runner.services.targets import RUN_FIELDS, apply_outcome, finish_execution, mark, target_run_apply

CANCEL_POLL_S = 0.5  # how often an in-process run looks for a cancel request


@dataclass
class _Dispatch:
    """State of one in-process run: statuses by run id, the halt and cancel flags."""

    execution: MigrationExecution
    statuses: dict[int, str]
    names: dict[int, str]
    halted_by: str = ""

    def blocked(self, run: TargetRun) -> str:
        for dep in run.depends_on:
            if self.statuses.get(dep) != TargetStatus.SUCCEEDED:
                return f"dependency {self.names.get(dep, dep)} {self.statuses.get(dep, 'missing')}"
        return ""


def execution_run(
    *,
    execution: MigrationExecution,
    on_target_done: Callable[[TargetRun], None] | None = None,
) -> MigrationExecution:
    """Run an execution's pending target runs in this process and return the finished execution."""
    runs = list(execution.targets.select_related("connection", "tenant").order_by("phase", "id"))
    sets = selectors.sets_load(types={run.database_type for run in runs})
    execution.status, execution.started_at = ExecutionStatus.IN_PROGRESS, execution.started_at or timezone.now()
    execution.save(update_fields=["status", "started_at"])
    state = _Dispatch(
        execution=execution,
        statuses={run.pk: run.status for run in runs},
        names={run.pk: f"{run.connection.name}/{run.schema_name}" for run in runs},
    )
    params = {
        c.pk: connection_params(c)
        for c in DatabaseConnection.all_objects.filter(pk__in={r.connection_id for r in runs})
    }
    stop = threading.Event()
    local = threading.local()
    sources: list[engine.ConnectionSource] = []
    sources_lock = threading.Lock()

    def source_for(connection_id) -> engine.ConnectionSource:
        cache = local.__dict__.setdefault("sources", {})
        if connection_id not in cache:
            cache[connection_id] = engine.ConnectionSource(
                lambda p=params[connection_id]: psycopg.connect(**p.kwargs())
            )
            with sources_lock:
                sources.append(cache[connection_id])
        return cache[connection_id]

    def work(run: TargetRun) -> engine.TargetOutcome:
        if state.halted_by or stop.is_set():
            return engine.TargetOutcome(status="not_started")
        return target_run_apply(
            run=run, execution=execution, sets=sets, source=source_for(run.connection_id), should_stop=stop.is_set
        )

    worker_name = f"{socket.gethostname()}:{os.getpid()}"
    by_phase: dict[int, list[TargetRun]] = defaultdict(list)
    for run in runs:
        by_phase[run.phase].append(run)
    next_cancel_check = 0.0

    def fill(queue: list[TargetRun], in_flight: dict[Future, TargetRun], pool: ThreadPoolExecutor) -> None:
        """Start targets until ``batch_size`` are in flight; skip the blocked ones."""
        while queue and len(in_flight) < execution.batch_size:
            run = queue.pop(0)
            reason = state.blocked(run)
            if not stop.is_set() and not state.halted_by and not reason:
                in_flight[pool.submit(work, run)] = run
                run.status, run.started_at, run.worker = TargetStatus.RUNNING, timezone.now(), worker_name
                run.save(update_fields=["status", "started_at", "worker"])
                continue
            if stop.is_set():
                mark([run], TargetStatus.CANCELLED, "execution cancelled")
            else:
                mark(
                    [run], TargetStatus.SKIPPED, f"halted after {state.halted_by} failed" if state.halted_by else reason
                )
            state.statuses[run.pk] = run.status
            if on_target_done:
                on_target_done(run)

    try:
        with ThreadPoolExecutor(max_workers=max(1, execution.batch_size), thread_name_prefix="target") as pool:
            for phase in sorted(by_phase):
                queue = [run for run in by_phase[phase] if run.status == TargetStatus.PENDING]
                in_flight: dict[Future, TargetRun] = {}
                fill(queue, in_flight, pool)
                while in_flight:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    finished = []
                    for future in done:
                        run = in_flight.pop(future)
                        outcome = future.result()
                        if outcome.status == "not_started":
                            cancelled = stop.is_set()
                            run.status = TargetStatus.CANCELLED if cancelled else TargetStatus.SKIPPED
                            run.skip_reason = (
                                "execution cancelled" if cancelled else f"halted after {state.halted_by} failed"
                            )
                            run.completed_at = timezone.now()
                        else:
                            apply_outcome(run, outcome)
                        state.statuses[run.pk] = run.status
                        if run.status == TargetStatus.FAILED and execution.on_failure == OnFailure.HALT:
                            state.halted_by = state.halted_by or state.names[run.pk]
                        finished.append(run)
                    # Start the next targets first, then record the finished ones while those run.
                    fill(queue, in_flight, pool)
                    for run in finished:
                        run.save(update_fields=[*RUN_FIELDS, "skip_reason"])
                        if on_target_done:
                            on_target_done(run)
                    if time.monotonic() >= next_cancel_check:
                        next_cancel_check = time.monotonic() + CANCEL_POLL_S
                        if MigrationExecution.objects.filter(pk=execution.pk, cancel_requested=True).exists():
                            execution.cancel_requested = True
                            stop.set()
    finally:
        for source in sources:
            source.close()
    return finish_execution(execution)
