"""Writes of the migrations app: starting executions, running targets, rollback.

In this module executions run in-process (``execution_run``): phase by phase,
at most ``batch_size`` targets in flight on a thread pool, each worker thread
reusing one connection per database. ``target_run_apply`` is the unit of work
(one target run, by id) so a queue worker can call it as well.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connections.models import DatabaseConnection
from connections.services import connection_params
from infra_site.errors import ValidationFailed
from migrations_runner import selectors
from migrations_runner.engine import apply as engine
from migrations_runner.engine.sets import DATABASE_TYPES, MigrationSet, Version
from migrations_runner.engine.targets import Target, dependency_problems, plan_phases
from migrations_runner.exceptions import RollbackRefused
from migrations_runner.models import (
    ExecutionKind,
    ExecutionStatus,
    MigrationExecution,
    OnFailure,
    Scope,
    TargetRun,
    TargetStatus,
)

logger = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5  # how often an in-process run looks for a cancel request
RUN_FIELDS = ["status", "to_version", "applied_versions", "attempts", "error", "completed_at", "duration_ms"]


def _options(execution: MigrationExecution, should_stop: Callable[[], bool]) -> engine.ApplyOptions:
    return engine.ApplyOptions(
        installed_by=execution.executed_by[:100],
        execution_id=str(execution.pk),
        statement_timeout_s=settings.MIGRATION_TIMEOUT,
        lock_timeout_s=settings.MIGRATION_LOCK_TIMEOUT,
        lock_wait_s=settings.MIGRATION_LOCK_WAIT,
        retry_attempts=settings.MIGRATION_RETRY_ATTEMPTS,
        should_stop=should_stop,
    )


def _spec(run: TargetRun) -> engine.TargetSpec:
    return engine.TargetSpec(
        schema=run.schema_name,
        create_schema=run.schema_name != "public",
        context={
            "schema": run.schema_name,
            "tenant_slug": run.tenant.slug if run.tenant_id else "",
            "region": run.region,
            "database_type": run.database_type,
        },
        label=f"{run.connection.name}/{run.schema_name}",
    )


def _check_snapshot(execution: MigrationExecution, mset: MigrationSet) -> str:
    """Return why the set on disk no longer matches the execution's snapshot, or ''."""
    snapshot = execution.metadata.get("sets", {}).get(mset.database_type)
    if snapshot is None:
        return ""
    current = mset.snapshot()
    if [v["checksum"] for v in snapshot["versions"]] != [v["checksum"] for v in current["versions"]]:
        return f"the {mset.database_type} set changed on disk since the execution started"
    return ""


def target_run_apply(
    *,
    run: TargetRun,
    execution: MigrationExecution,
    sets: dict[str, MigrationSet],
    source: engine.ConnectionSource,
    should_stop: Callable[[], bool] = lambda: False,
) -> engine.TargetOutcome:
    """Apply (or, for a rollback execution, undo) the versions of one target run; touches no Django rows."""
    mset = sets[run.database_type]
    changed = _check_snapshot(execution, mset)
    if changed:
        return engine.TargetOutcome(status="failed", error=engine.TargetError(kind="set_changed", message=changed))
    options = _options(execution, should_stop)
    if execution.kind == ExecutionKind.ROLLBACK:
        versions = [Version.parse(v) for v in run.pending_versions]
        return engine.undo_target(source, _spec(run), mset, versions, options)
    return engine.apply_target(source, _spec(run), mset, options)


def _apply_outcome(run: TargetRun, outcome: engine.TargetOutcome) -> None:
    """Copy an engine outcome onto a target run (not saved)."""
    now = timezone.now()
    run.status = {"succeeded": TargetStatus.SUCCEEDED, "cancelled": TargetStatus.CANCELLED}.get(
        outcome.status, TargetStatus.FAILED
    )
    run.to_version = outcome.to_version
    run.applied_versions = [
        {"version": a.version, "script": a.script, "duration_ms": a.duration_ms, "kind": a.kind}
        for a in outcome.applied
    ]
    run.attempts = outcome.attempts
    run.error = outcome.error.as_dict() if outcome.error else None
    run.completed_at = now
    run.duration_ms = int((now - run.started_at).total_seconds() * 1000) if run.started_at else None


def _mark(runs: list[TargetRun], status: str, reason: str) -> None:
    now = timezone.now()
    for run in runs:
        run.status, run.skip_reason, run.completed_at = status, reason, now
    TargetRun.objects.bulk_update(runs, ["status", "skip_reason", "completed_at"])


def _finish_execution(execution: MigrationExecution) -> MigrationExecution:
    statuses = set(execution.targets.values_list("status", flat=True))
    if execution.cancel_requested and TargetStatus.CANCELLED in statuses:
        status = ExecutionStatus.CANCELLED
    elif statuses & {TargetStatus.FAILED, TargetStatus.SKIPPED, TargetStatus.CANCELLED}:
        status = ExecutionStatus.FAILED
    else:
        status = ExecutionStatus.COMPLETED
    execution.status = status
    execution.completed_at = timezone.now()
    execution.save(update_fields=["status", "completed_at"])
    if status == ExecutionStatus.COMPLETED and execution.kind == ExecutionKind.ROLLBACK and not execution.dry_run:
        MigrationExecution.objects.filter(pk=execution.metadata.get("rollback_of")).update(
            status=ExecutionStatus.ROLLED_BACK
        )
    logger.info(
        "execution finished",
        extra={"execution": str(execution.pk), "kind": execution.kind, "status": status, "scope": execution.scope},
    )
    return execution


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
                _mark([run], TargetStatus.CANCELLED, "execution cancelled")
            else:
                _mark(
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
                            _apply_outcome(run, outcome)
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
    return _finish_execution(execution)


def _bulk_runs(execution: MigrationExecution, rows: list[TargetRun], requires: dict[int, list[int]]) -> None:
    """Insert target runs and translate dependencies (indexes into ``rows``) into run ids."""
    TargetRun.objects.bulk_create(rows, batch_size=500)
    if not rows or rows[0].pk is None:  # a backend that does not return ids
        ids = list(execution.targets.order_by("id").values_list("id", flat=True))
        for row, pk in zip(rows, ids, strict=True):
            row.pk = row.id = pk
    changed = []
    for index, deps in requires.items():
        if deps:
            rows[index].depends_on = [rows[d].pk for d in deps]
            changed.append(rows[index])
    TargetRun.objects.bulk_update(changed, ["depends_on"], batch_size=500)


def execution_start(
    *,
    scope: str,
    executed_by: str,
    regions: list[str] | None = None,
    connections: list[str] | None = None,
    tenants: list[str] | None = None,
    dry_run: bool = False,
    on_failure: str = OnFailure.CONTINUE,
    batch_size: int | None = None,
    run: bool = True,
    on_target_done: Callable[[TargetRun], None] | None = None,
) -> MigrationExecution:
    """Plan an execution (targets, phases, pending versions), record it, and run it in-process unless told not to.

    A dry run records the plan and changes nothing on any target.
    """
    problems = dependency_problems(settings.MIGRATION_DEPENDENCIES, DATABASE_TYPES)
    if problems:
        raise ValidationFailed("MIGRATION_DEPENDENCIES is invalid: " + "; ".join(problems), code="invalid_dependencies")
    targets = selectors.targets_resolve(scope=scope, regions=regions, connections=connections, tenants=tenants)
    sets = selectors.sets_load(types={t.database_type for t in targets})
    plan = plan_phases(targets, settings.MIGRATION_DEPENDENCIES)
    states = selectors.schema_states(targets)
    ordered = [t for phase in plan.phases for t in phase]
    index_of = {t.key: i for i, t in enumerate(ordered)}
    phase_of = {t.key: n for n, phase in enumerate(plan.phases) for t in phase}
    now = timezone.now()
    with transaction.atomic():
        execution = MigrationExecution.objects.create(
            kind=ExecutionKind.MIGRATE,
            scope=scope,
            filters={"regions": regions or [], "connections": connections or [], "tenants": tenants or []},
            dry_run=dry_run,
            on_failure=on_failure,
            batch_size=batch_size or settings.MIGRATION_BATCH_SIZE,
            executed_by=executed_by,
            batch_id=uuid.uuid4().hex[:12],
            metadata={
                "sets": {t: sets[t].snapshot() for t in sorted({t.database_type for t in targets})},
                "dependencies": settings.MIGRATION_DEPENDENCIES,
            },
            started_at=now,
        )
        rows = [
            _planned_run(execution, t, states[t.key], sets[t.database_type], phase_of[t.key], dry_run, now)
            for t in ordered
        ]
        requires = {index_of[k]: [index_of[d] for d in deps] for k, deps in plan.requires.items()}
        _bulk_runs(execution, rows, requires)
    logger.info(
        "execution planned",
        extra={
            "execution": str(execution.pk),
            "scope": scope,
            "targets": len(rows),
            "dry_run": dry_run,
            "executed_by": executed_by,
        },
    )
    if dry_run or not any(r.status == TargetStatus.PENDING for r in rows):
        return _finish_execution(execution)
    if run:
        return execution_run(execution=execution, on_target_done=on_target_done)
    return execution


def _planned_run(
    execution: MigrationExecution, target: Target, state, mset: MigrationSet, phase: int, dry_run: bool, now
) -> TargetRun:
    run = TargetRun(
        execution=execution,
        connection_id=uuid.UUID(target.connection_id),
        tenant_id=target.tenant_id,
        schema_name=target.schema,
        database_type=target.database_type,
        region=target.region,
        phase=phase,
    )
    if isinstance(state, str):
        # Unreachable at planning time: a real run still tries (and retries) it; a dry run reports it.
        if dry_run:
            run.status, run.completed_at = TargetStatus.FAILED, now
            run.error = {"kind": "connection", "message": state}
        return run
    plan = selectors.target_plan(target, state, mset)
    run.from_version = plan["current_version"] or ""
    run.pending_versions = plan["pending"]
    if plan["drift"]:
        if dry_run:
            run.status, run.completed_at = TargetStatus.FAILED, now
            run.error = {"kind": "drift", "message": "Drift: " + "; ".join(plan["drift"])}
        return run
    if dry_run or not plan["pending"]:
        run.status, run.completed_at, run.to_version = TargetStatus.SUCCEEDED, now, run.from_version
    return run


def execution_rollback(
    *,
    execution: MigrationExecution,
    executed_by: str,
    run: bool = True,
    on_target_done: Callable[[TargetRun], None] | None = None,
) -> MigrationExecution:
    """Undo what a migrate execution applied, target by target, newest version first.

    Refused up front, with the list, when an undo script is missing; nothing runs then.
    """
    if execution.kind != ExecutionKind.MIGRATE or execution.dry_run:
        raise RollbackRefused("Only a migrate execution that was not a dry run can be rolled back.")
    if not execution.is_finished:
        raise RollbackRefused("The execution is still running; cancel it or wait for it to finish.")
    if execution.status == ExecutionStatus.ROLLED_BACK:
        raise RollbackRefused("The execution has already been rolled back.")
    originals = [
        r
        for r in execution.targets.select_related("connection", "tenant").order_by("phase", "id")
        if any(a.get("kind") == "SQL" for a in r.applied_versions)
    ]
    if not originals:
        raise RollbackRefused("The execution applied nothing, so there is nothing to roll back.")
    sets = selectors.sets_load(types={r.database_type for r in originals})
    missing = sorted(
        {
            f"{r.database_type}/U{a['version']}__ (undo of {a['script']})"
            for r in originals
            for a in r.applied_versions
            if a.get("kind") == "SQL" and Version.parse(a["version"]) not in sets[r.database_type].undo
        }
    )
    if missing:
        raise RollbackRefused(
            f"Rollback refused: {len(missing)} undo script(s) missing: {', '.join(missing)}.",
            details={"missing_undo_scripts": missing},
        )
    top = max(r.phase for r in originals)
    with transaction.atomic():
        rollback = MigrationExecution.objects.create(
            kind=ExecutionKind.ROLLBACK,
            scope=execution.scope,
            filters=execution.filters,
            on_failure=OnFailure.HALT,
            batch_size=execution.batch_size,
            executed_by=executed_by,
            batch_id=uuid.uuid4().hex[:12],
            metadata={
                "rollback_of": str(execution.pk),
                "sets": {t: sets[t].snapshot() for t in {r.database_type for r in originals}},
            },
            started_at=timezone.now(),
        )
        rows = [
            TargetRun(
                execution=rollback,
                connection_id=r.connection_id,
                tenant_id=r.tenant_id,
                schema_name=r.schema_name,
                database_type=r.database_type,
                region=r.region,
                phase=top - r.phase,
                from_version=r.to_version,
                pending_versions=[a["version"] for a in reversed(r.applied_versions) if a.get("kind") == "SQL"],
            )
            for r in originals
        ]
        position = {r.pk: i for i, r in enumerate(originals)}
        # Reverse the original dependencies: a target is undone only after the targets that depended on it.
        requires: dict[int, list[int]] = defaultdict(list)
        for r in originals:
            for dep in r.depends_on:
                if dep in position:
                    requires[position[dep]].append(position[r.pk])
        _bulk_runs(rollback, rows, requires)
    logger.warning(
        "rollback planned",
        extra={
            "execution": str(rollback.pk),
            "rollback_of": str(execution.pk),
            "targets": len(rows),
            "executed_by": executed_by,
        },
    )
    if run:
        return execution_run(execution=rollback, on_target_done=on_target_done)
    return rollback


def target_rollback(
    *, connection: DatabaseConnection, schema: str, to_version: str, executed_by: str, run: bool = True
) -> MigrationExecution:
    """Undo the versions above ``to_version`` on one target (refused when an undo script is missing)."""
    target = next(
        (t for t in selectors.targets_resolve(scope=Scope.ALL, connections=[connection.name]) if t.schema == schema),
        None,
    )
    if target is None:
        raise RollbackRefused(f"{connection.name}/{schema} is not a migration target.")
    boundary = Version.parse(to_version) if to_version not in ("", "0") else None
    sets = selectors.sets_load(types={target.database_type})
    mset = sets[target.database_type]
    state = selectors.schema_states([target])[target.key]
    if isinstance(state, str):
        raise RollbackRefused(f"{target.label} is unreachable: {state}")
    versions = sorted((v for v in state.applied if boundary is None or v > boundary), reverse=True)
    if not versions:
        raise RollbackRefused(f"{target.label} is already at or below version {to_version}.")
    missing = [
        f"{target.database_type}/U{v}__ (undo of {state.applied_scripts[v]})" for v in versions if v not in mset.undo
    ]
    if missing:
        raise RollbackRefused(
            f"Rollback refused: {len(missing)} undo script(s) missing: {', '.join(missing)}.",
            details={"missing_undo_scripts": missing},
        )
    with transaction.atomic():
        rollback = MigrationExecution.objects.create(
            kind=ExecutionKind.ROLLBACK,
            scope=Scope.SINGLE,
            filters={"connections": [connection.name], "schema": schema, "to_version": to_version},
            on_failure=OnFailure.HALT,
            batch_size=1,
            executed_by=executed_by,
            batch_id=uuid.uuid4().hex[:12],
            metadata={"sets": {target.database_type: mset.snapshot()}, "to_version": to_version},
            started_at=timezone.now(),
        )
        TargetRun.objects.create(
            execution=rollback,
            connection=connection,
            tenant_id=target.tenant_id,
            schema_name=schema,
            database_type=target.database_type,
            region=target.region,
            from_version=str(state.current),
            pending_versions=[str(v) for v in versions],
        )
    return execution_run(execution=rollback) if run else rollback


def execution_cancel(*, execution: MigrationExecution, actor: str) -> MigrationExecution:
    """Ask a running execution to stop: targets not started become cancelled, running ones stop between scripts."""
    if execution.is_finished:
        return execution
    MigrationExecution.objects.filter(pk=execution.pk).update(cancel_requested=True)
    execution.cancel_requested = True
    logger.warning("execution cancel requested", extra={"execution": str(execution.pk), "actor": actor})
    return execution


def execution_submit(**params) -> MigrationExecution:
    """Start an execution for an interface (API, admin): returns the recorded execution."""
    return execution_start(**params)


def rollback_submit(*, execution: MigrationExecution, executed_by: str) -> MigrationExecution:
    """Start the rollback of an execution for an interface (API, admin)."""
    return execution_rollback(execution=execution, executed_by=executed_by)
