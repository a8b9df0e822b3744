"""Starting executions (planning their targets and phases), rollback, cancel and retry."""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from functools import partial
from typing import cast

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connections.models import DatabaseConnection
from infra_site.bulk import analyze, bulk_insert, maker
from infra_site.errors import ValidationFailed
from migrations_runner import selectors
from migrations_runner.engine.sets import DATABASE_TYPES, MigrationSet, Version
from migrations_runner.engine.targets import Target, dependency_problems, plan_phases
from migrations_runner.exceptions import (
    ExecutionFinished,
    InvalidWaves,
    LintFailed,
    NotAwaitingApproval,
    RetryRefused,
    RollbackRefused,
)
from migrations_runner.models import (
    ExecutionKind,
    ExecutionStatus,
    MigrationExecution,
    OnFailure,
    Origin,
    Purpose,
    Scope,
    TargetRun,
    TargetStatus,
    Waiting,
)
from migrations_runner.options import ExecutionOptions, WaveOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.services.completion import on_finished
from migrations_runner.services.runner import COUNTER_OF, execution_cancel_now, execution_launch, execution_run
from migrations_runner.services.targets import finish_execution
from migrations_runner.services.waves import canaries_missing, waves_assign

logger = logging.getLogger(__name__)

# Runs to apply from which planning refreshes the runs table's statistics (PostgreSQL; infra_site.bulk.analyze).
ANALYZE_FROM = 1000


def _bulk_runs(execution: MigrationExecution, rows: list[TargetRun], requires: dict[int, list[int]]) -> None:
    """Insert target runs, translate dependencies (indexes into ``rows``) into run ids, and set the counters.

    The rows go in as a few bulk inserts: a row whose dependencies are not inserted yet first flushes the rows
    before it, so that its ``depends_on`` holds ids when it is inserted (dependencies come in earlier phases:
    one insert per layer, no update of 10,000 rows afterwards)."""
    servers = {
        pk: f"{host}:{port}"
        for pk, host, port in DatabaseConnection.all_objects.filter(pk__in={r.connection_id for r in rows}).values_list(
            "pk", "host", "port"
        )
    }
    for row in rows:
        row.server = servers[row.connection_id]
    batch: list[TargetRun] = []
    inserted = 0
    late: list[int] = []  # rows placed before a dependency of theirs (not planned so; kept correct anyway)

    def flush() -> None:
        nonlocal inserted
        if not batch:
            return
        bulk_insert(batch)
        ids = execution.targets.order_by("id").values_list("id", flat=True)[inserted:]
        for row, pk in zip(batch, ids, strict=True):
            row.pk = row.id = pk
            row._state.adding, row._state.db = False, execution._state.db
        inserted += len(batch)
        batch.clear()

    for index, row in enumerate(rows):
        deps = requires.get(index) or []
        if any(rows[d].pk is None for d in deps):
            flush()
        if all(rows[d].pk is not None for d in deps):
            row.depends_on = [rows[d].pk for d in deps]
        else:
            late.append(index)
        batch.append(row)
    flush()
    for index in late:
        rows[index].depends_on = [rows[d].pk for d in requires[index]]
    TargetRun.objects.bulk_update([rows[i] for i in late], ["depends_on"], batch_size=500)
    counts: dict[str, int] = dict.fromkeys(COUNTER_OF, 0)
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    execution.targets_total = len(rows)
    for status, name in COUNTER_OF.items():
        setattr(execution, name, counts[status])
    execution.save(update_fields=["targets_total", *COUNTER_OF.values()])


def execution_start(
    *,
    selection: TargetSelection,
    options: ExecutionOptions,
    actor: str,
    origin: Origin,
    wait: bool = False,
    on_poll: Callable[[MigrationExecution], None] | None = None,
) -> MigrationExecution:
    """Plan an execution over ``selection`` (targets, phases, pending versions, canary waves), record it and
    launch it; return the execution.

    Invalid ``options`` are refused (``InvalidOptions``) before anything is planned or recorded. The execution
    returns at once, queued for the workers, unless ``wait`` (or ``MIGRATION_EXECUTOR`` inline): then its lanes
    run as threads of this process and it returns finished, or waiting for approval between two waves, with
    ``on_poll`` called with it about every half second meanwhile. A dry run records the plan, changes nothing
    on any target, and returns finished.
    """
    options.validate()
    execution = _record(selection=selection, options=options, actor=actor, origin=origin)
    return _launch(execution, wait=wait, on_poll=on_poll)


def _record(
    *,
    selection: TargetSelection,
    options: ExecutionOptions,
    actor: str,
    origin: Origin,
    targets: list[Target] | None = None,
    metadata: dict | None = None,
    parent: MigrationExecution | None = None,
    purpose: Purpose = Purpose.MIGRATION,
) -> MigrationExecution:
    """Plan and record an execution without launching it; finished already when it is a dry run or has no work.

    ``targets`` (a retry's, a provisioning's) replaces the resolution of ``selection``, which is then only
    recorded. ``options.waves`` splits the tenant targets that have work into canary waves (``services/waves.py``).
    """
    problems = dependency_problems(settings.MIGRATION_DEPENDENCIES, DATABASE_TYPES)
    if problems:
        raise ValidationFailed("MIGRATION_DEPENDENCIES is invalid: " + "; ".join(problems), code="invalid_dependencies")
    options = options.resolved()
    dry_run, out_of_order, waves = options.dry_run, options.out_of_order, options.waves
    if targets is None:
        targets = selectors.targets_resolve(selection)
    sets = selectors.sets_load(types={t.database_type for t in targets})
    plan = plan_phases(targets, settings.MIGRATION_DEPENDENCIES)
    states = selectors.schema_states(targets)
    plans = selectors.target_plans(targets, states, sets, out_of_order=out_of_order)
    ordered = [t for phase in plan.phases for t in phase]
    phase_of = {t.key: n for n, phase in enumerate(plan.phases) for t in phase}
    wave_of: dict[str, int] = {}
    wave_plan: list[dict] = []
    if waves.enabled:
        wave_of, wave_plan = _plan_waves(waves, targets, plans, phase_of)
        # Runs are claimed in id order within a phase: canaries first, then the smallest schemas.
        position = {key: n for n, key in enumerate(wave_of)}
        ordered.sort(key=lambda t: (phase_of[t.key], position.get(t.key, -1)))
    index_of = {t.key: i for i, t in enumerate(ordered)}
    now = timezone.now()
    with transaction.atomic():
        execution = MigrationExecution.objects.create(
            kind=ExecutionKind.MIGRATE,
            purpose=purpose,
            scope=selection.scope,
            filters=selection.as_filters(),
            dry_run=dry_run,
            on_failure=options.on_failure,
            batch_size=cast(int, options.batch_size),  # resolved: never None
            executed_by=actor,
            origin=origin,
            parent=parent,
            metadata={
                "sets": {t: sets[t].snapshot() for t in sorted({t.database_type for t in targets})},
                "dependencies": settings.MIGRATION_DEPENDENCIES,
                "options": options.as_dict(),
                **(metadata or {}),
            },
            started_at=now,
            **(_wave_fields(waves, wave_plan) if wave_plan else {}),
        )
        make = maker(TargetRun, execution=execution)
        rows = [_planned_run(make, t, plans[t.key], phase_of[t.key], dry_run, now) for t in ordered]
        if not dry_run:
            _refuse_lint_errors(sets, rows)
        for row, target in zip(rows, ordered, strict=True):
            row.wave = wave_of.get(target.key)
        requires = {index_of[k]: [index_of[d] for d in deps] for k, deps in plan.requires.items()}
        _bulk_runs(execution, rows, requires)
    if sum(row.status == TargetStatus.PENDING for row in rows) >= ANALYZE_FROM:
        analyze(TargetRun)  # the claims and the pages of its runs are planned on their numbers from the start
    logger.info(
        "execution planned",
        extra={
            "execution": str(execution.pk),
            "selection": selection.describe(),
            "targets": len(rows),
            "dry_run": dry_run,
            "executed_by": actor,
        },
    )
    if dry_run or not any(r.status == TargetStatus.PENDING for r in rows):
        return finish_execution(execution)
    return execution


def _launch(
    execution: MigrationExecution, *, wait: bool, on_poll: Callable[[MigrationExecution], None] | None = None
) -> MigrationExecution:
    """Start a recorded execution: lanes on the queue workers (returns at once), or threads of this process when
    ``wait`` or ``MIGRATION_EXECUTOR`` is inline (returns it finished or waiting for approval)."""
    if execution.is_finished:
        return execution
    if wait or settings.MIGRATION_EXECUTOR == "inline":
        return execution_run(execution=execution, on_poll=partial(on_poll, execution) if on_poll else None)
    return execution_launch(execution=execution)


def _refuse_lint_errors(sets: dict[str, MigrationSet], rows: list[TargetRun]) -> None:
    """Raise ``LintFailed`` (nothing recorded: the caller's transaction rolls back) when the scripts the runs
    would apply hold lint errors and ``MIGRATION_LINT`` is ``block``."""
    pending: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.status == TargetStatus.PENDING:
            pending[row.database_type].update(row.pending_versions)
    blocking = selectors.lint_blocking(selectors.lint_of(sets, pending))
    if blocking:
        named = "; ".join(f"{f['script']} line {f['line']}: {f['rule']}" for f in blocking[:20])
        raise LintFailed(
            f"The scripts this run would apply have {len(blocking)} lint error(s) (MIGRATION_LINT=block): {named}.",
            details={"findings": blocking},
        )


def _has_work(plan: selectors.TargetPlan) -> bool:
    """Whether a run would try something on the target: pending versions without drift, or unreachable now."""
    return plan.error is not None or (bool(plan.pending) and not plan.drift)


def _plan_waves(
    options: WaveOptions,
    targets: list[Target],
    plans: dict[str, selectors.TargetPlan],
    phase_of: dict[str, int],
) -> tuple[dict[str, int], list[dict]]:
    """Assign the tenant targets with work to waves and move each wave to a phase of its own (``phase_of`` is
    updated); return the waves by target key and the plan ``[{"wave", "phase", "size"}]``."""
    waved = [t for t in targets if t.database_type == "tenant" and _has_work(plans[t.key])]
    missing = canaries_missing(options, waved)
    if missing:
        raise InvalidWaves(
            f"Canary tenants not among this run's tenants with work: {', '.join(missing)}.",
            details={
                "canary": [f"{slug!r} is not a tenant with pending versions in this selection." for slug in missing]
            },
        )
    if not waved:
        return {}, []
    wave_of = waves_assign(options, waved, selectors.schema_sizes(waved))
    count = max(wave_of.values())
    base = max(phase_of[key] for key in wave_of)
    for key, phase in phase_of.items():
        if key in wave_of:
            phase_of[key] = base + wave_of[key] - 1
        elif phase > base:
            phase_of[key] = phase + count - 1
    sizes = Counter(wave_of.values())
    return wave_of, [{"wave": w, "phase": base + w - 1, "size": sizes[w]} for w in range(1, count + 1)]


def _wave_fields(options: WaveOptions, plan: list[dict]) -> dict:
    return {
        "waves": plan,
        "failure_budget": str(options.failure_budget),
        "wave_pause_s": options.pause_s,
        "wave_approval": options.approval,
    }


def _planned_run(
    make: Callable[..., TargetRun],
    target: Target,
    plan: selectors.TargetPlan,
    phase: int,
    dry_run: bool,
    now,
) -> TargetRun:
    run = make(
        connection_id=uuid.UUID(target.connection_id),
        tenant_id=target.tenant_id,
        schema_name=target.schema,
        database_type=target.database_type,
        region=target.region,
        phase=phase,
    )
    if plan.error is not None:
        # Unreachable at planning time: a real run still tries (and retries) it; a dry run reports it.
        if dry_run:
            run.status, run.completed_at = TargetStatus.FAILED, now
            run.error = {"kind": "connection", "message": plan.error}
        return run
    run.from_version = plan.current_version or ""
    run.pending_versions = plan.pending
    if plan.drift or plan.refusal:
        # A real run leaves the refusal to the engine, which decides on the history it reads under the lock.
        if dry_run:
            run.status, run.completed_at = TargetStatus.FAILED, now
            run.error = (
                {"kind": "drift", "message": "Drift: " + "; ".join(plan.drift)}
                if plan.drift
                else {"kind": "out_of_order", "message": plan.refusal, "version": plan.out_of_order[0]}
            )
        return run
    if dry_run or not plan.pending:
        run.status, run.completed_at, run.to_version = TargetStatus.SUCCEEDED, now, run.from_version
    return run


def execution_rollback(
    *, execution: MigrationExecution, actor: str, origin: Origin, wait: bool = False
) -> MigrationExecution:
    """Record and launch the undoing of what a migrate execution applied, target by target, newest version
    first; return the rollback execution (launched as ``execution_start`` launches, ``wait`` included).

    Refused up front, with the list, when an undo script is missing; nothing runs then.
    """
    plan = selectors.rollback_plan(execution=execution)
    if plan.refusal:
        raise RollbackRefused(plan.refusal, details={"missing_undo_scripts": plan.missing} if plan.missing else None)
    originals, sets = plan.runs, plan.sets
    top = max(r.phase for r in originals)
    with transaction.atomic():
        rollback = MigrationExecution.objects.create(
            kind=ExecutionKind.ROLLBACK,
            purpose=Purpose.ROLLBACK,
            scope=execution.scope,
            filters=execution.filters,
            on_failure=OnFailure.HALT,
            batch_size=execution.batch_size,
            executed_by=actor,
            origin=origin,
            parent=execution,
            metadata={
                "rollback_of": str(execution.pk),
                "sets": {t: sets[t].snapshot() for t in {r.database_type for r in originals}},
            },
            started_at=timezone.now(),
        )
        make = maker(TargetRun, execution=rollback)
        rows = [
            make(
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
            "executed_by": actor,
        },
    )
    return _launch(rollback, wait=wait)


@on_finished(Purpose.ROLLBACK)
def rollback_finished(execution: MigrationExecution) -> None:
    """A rollback of a whole execution that completed marks that execution rolled back."""
    if execution.status == ExecutionStatus.COMPLETED and execution.parent_id and not execution.dry_run:
        MigrationExecution.objects.filter(pk=execution.parent_id).update(status=ExecutionStatus.ROLLED_BACK)


def target_rollback(
    *,
    connection: DatabaseConnection,
    schema: str,
    to_version: str,
    actor: str,
    origin: Origin,
    wait: bool = False,
) -> MigrationExecution:
    """Record and launch the undoing of the versions above ``to_version`` on one target (refused when an undo
    script is missing); return the rollback execution (launched as ``execution_start`` launches)."""
    on_connection = selectors.targets_resolve(TargetSelection(connections=[connection.name]))
    target = next((t for t in on_connection if t.schema == schema), None)
    if target is None:
        raise RollbackRefused(f"{connection.name}/{schema} is not a migration target.")
    boundary = Version.parse(to_version) if to_version not in ("", "0") else None
    sets = selectors.sets_load(types={target.database_type})
    mset = sets[target.database_type]
    state = selectors.schema_states([target])[target.key]
    if isinstance(state, str):
        raise RollbackRefused(f"{target.label} is unreachable: {state}")
    # Versions at or below a baseline were never run here and cannot be undone: a rollback stops at it.
    versions = sorted(
        (v for v in state.applied if (boundary is None or v > boundary) and not state.below_baseline(v)), reverse=True
    )
    if not versions and state.baseline is not None and (boundary is None or boundary < state.baseline):
        raise RollbackRefused(
            f"{target.label} is baselined at version {state.baseline} with nothing above it to undo; versions at "
            f"or below a baseline cannot be undone (asked for {to_version}).",
            details={"baseline": str(state.baseline), "to_version": to_version},
        )
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
            purpose=Purpose.ROLLBACK,
            scope=Scope.SINGLE,
            filters={"connections": [connection.name], "schema": schema, "to_version": to_version},
            on_failure=OnFailure.HALT,
            batch_size=1,
            executed_by=actor,
            origin=origin,
            metadata={"sets": {target.database_type: mset.snapshot()}, "to_version": to_version},
            started_at=timezone.now(),
        )
        row = TargetRun(
            execution=rollback,
            connection=connection,
            tenant_id=target.tenant_id,
            schema_name=schema,
            database_type=target.database_type,
            region=target.region,
            from_version=str(state.current),
            pending_versions=[str(v) for v in versions],
        )
        _bulk_runs(rollback, [row], {})
    return _launch(rollback, wait=wait)


def execution_cancel(*, execution: MigrationExecution, actor: str) -> MigrationExecution:
    """Cancel an execution in any state: what has not started is cancelled at once, running targets stop
    between scripts, and the execution ends as soon as nothing runs."""
    if execution.is_finished:
        raise ExecutionFinished(
            f"Execution {execution.pk} is already {execution.status}; there is nothing to cancel.",
            details={"id": str(execution.pk), "status": execution.status},
        )
    execution_cancel_now(execution=execution, actor=actor)
    logger.warning("execution cancelled", extra={"execution": str(execution.pk), "actor": actor})
    execution.refresh_from_db()
    return execution


def _awaiting_approval(execution_id) -> MigrationExecution:
    """The execution, locked, when it waits for approval between two waves; ``NotAwaitingApproval`` (409) else."""
    execution = MigrationExecution.objects.select_for_update().get(pk=execution_id)
    if execution.is_finished or execution.waiting != Waiting.APPROVAL:
        state = execution.status if execution.is_finished else (execution.waiting or "running")
        raise NotAwaitingApproval(
            f"Execution {execution.pk} is not awaiting approval between two waves (it is {state}).",
            details={"id": str(execution.pk), "status": execution.status, "waiting": execution.waiting},
        )
    return execution


def execution_continue(*, execution: MigrationExecution, actor: str) -> MigrationExecution:
    """Approve the next wave of an execution that waits for approval, and start its lanes."""
    with transaction.atomic():
        locked = _awaiting_approval(execution.pk)
        wave = locked.approved_wave + 1
        for entry in locked.waves:
            if entry["wave"] == wave:
                entry["approved_by"], entry["approved_at"] = actor, timezone.now().isoformat()
        locked.approved_wave, locked.waiting = wave, Waiting.NOTHING
        locked.save(update_fields=["approved_wave", "waiting", "waves"])
    logger.warning("wave approved", extra={"execution": str(locked.pk), "wave": wave, "actor": actor})
    return _launch(locked, wait=False)


def execution_abort(*, execution: MigrationExecution, actor: str) -> MigrationExecution:
    """Stop an execution that waits for approval: the waves not started are cancelled."""
    with transaction.atomic():
        locked = _awaiting_approval(execution.pk)
    wave = locked.approved_wave + 1
    execution_cancel_now(execution=locked, actor=actor, reason=f"aborted before wave {wave} by {actor}")
    logger.warning("waves aborted", extra={"execution": str(locked.pk), "wave": wave, "actor": actor})
    locked.refresh_from_db()
    return locked


def execution_retry(
    *, execution: MigrationExecution, actor: str, origin: Origin, wait: bool = False
) -> MigrationExecution:
    """Record and launch a new execution over just the failed targets of ``execution``, with its options (no
    waves, not a dry run); return it (launched as ``execution_start`` launches)."""
    if not execution.is_finished:
        raise RetryRefused("The execution is still running; wait for it to finish before retrying.")
    failed = list(execution.targets.filter(status=TargetStatus.FAILED).select_related("connection", "tenant"))
    if not failed:
        raise RetryRefused("The execution has no failed target to retry.")
    targets = [
        Target(
            connection_id=str(r.connection_id),
            connection_name=r.connection.name,
            database_type=r.database_type,
            region=r.region,
            schema=r.schema_name,
            tenant_slug=r.tenant.slug if r.tenant else "",
            tenant_id=r.tenant_id,
            create_schema=r.schema_name != "public",
            database=r.connection.database_name,
            user=r.connection.username,
        )
        for r in failed
    ]
    stored = execution.metadata.get("options", {})
    options = ExecutionOptions(
        on_failure=execution.on_failure,
        batch_size=execution.batch_size,
        statement_timeout_s=stored.get("statement_timeout_s"),
        lock_timeout_s=stored.get("lock_timeout_s"),
        out_of_order=bool(stored.get("out_of_order", False)),
    )
    retry = _record(
        selection=execution.selection,
        options=options,
        actor=actor,
        origin=origin,
        targets=targets,
        metadata={"retry_of": str(execution.pk)},
        purpose=Purpose.RETRY,
        parent=execution,
    )
    return _launch(retry, wait=wait)
