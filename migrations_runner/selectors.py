"""Reads of the migrations app: sets, targets, executions, progress, and the fleet's state."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone

from connections import selectors as registry
from connections.models import DatabaseConnection, DatabaseType
from connections.services import connection_params
from migrations_runner.engine import history
from migrations_runner.engine.apply import drift_of, pending_of
from migrations_runner.engine.sets import MigrationSet, Version, load_sets
from migrations_runner.engine.targets import Target
from migrations_runner.exceptions import ExecutionNotFound, InvalidMigrationSets, NoTargets, ScheduleNotFound
from migrations_runner.models import (
    ExecutionKind,
    ExecutionStatus,
    MigrationExecution,
    MigrationSchedule,
    Scope,
    TargetRun,
    TargetStatus,
)

SCOPE_TYPES = {
    Scope.ALL: ("admin", "shared", "analytics", "tenant"),
    Scope.ADMIN: ("admin",),
    Scope.REGIONAL: ("shared", "analytics"),
    Scope.TENANT: ("tenant",),
    Scope.SINGLE: ("admin", "shared", "analytics", "tenant"),
}


_sets_cache: dict[str, tuple[tuple, dict[str, MigrationSet]]] = {}


def _sets_signature(root) -> tuple:
    """Names, sizes and modification times of every file of the sets: a change of any reloads them."""
    entries = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for path in sorted(folder.iterdir()):
            stat = path.stat()
            entries.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def sets_load(*, types: Iterable[str] | None = None, strict: bool = True) -> dict[str, MigrationSet]:
    """Load the migration sets (cached per process until a file changes); with ``strict``, refuse problems."""
    root = settings.MIGRATIONS_DIR
    signature = _sets_signature(root)
    cached = _sets_cache.get(str(root))
    if cached is None or cached[0] != signature:
        cached = (signature, load_sets(root))
        _sets_cache[str(root)] = cached
    sets = cached[1]
    if strict:
        problems = [f"{t}/{p}" for t in (types or sets) for p in sets[t].problems]
        if problems:
            raise InvalidMigrationSets(
                f"The migration sets have {len(problems)} problem(s); fix them before running.",
                details={"problems": problems},
            )
    return sets


def _target(connection: DatabaseConnection, set_type: str, schema: str, tenant=None) -> Target:
    return Target(
        connection_id=str(connection.pk),
        connection_name=connection.name,
        database_type=set_type,
        region=connection.region,
        schema=schema,
        database=f"{connection.host}:{connection.port}/{connection.database_name}",
        tenant_slug=tenant.slug if tenant else "",
        tenant_id=tenant.pk if tenant else None,
        create_schema=schema != "public",
    )


def targets_resolve(
    *,
    scope: str,
    regions: list[str] | None = None,
    connections: list[str] | None = None,
    tenants: list[str] | None = None,
) -> list[Target]:
    """Return the targets of a scope narrowed by filters; raise ``NoTargets`` when none match."""
    types = SCOPE_TYPES[scope]
    # The targets need no passwords: leave them encrypted (decrypting per tenant row costs).
    live = registry.connection_list(is_active=True).defer("password")
    targets: list[Target] = []
    if not tenants:
        for connection in live.filter(database_type__in=[t for t in types if t != "tenant"]):
            targets.append(_target(connection, connection.database_type, connection.default_schema))
    if "tenant" in types:
        tenant_qs = registry.tenant_list_targetable().defer("connection__password")
        if tenants:
            tenant_qs = tenant_qs.filter(slug__in=tenants)
        hosting = set()
        for tenant in tenant_qs:
            targets.append(_target(tenant.connection, "tenant", tenant.schema_name, tenant))
            hosting.add(tenant.connection_id)
        if not tenants:
            # A dedicated tenant database that no tenant row describes still gets the tenant set.
            bare = live.filter(database_type=DatabaseType.TENANT).exclude(pk__in=hosting)
            bare = bare.exclude(tenants__isnull=False)
            targets.extend(_target(c, "tenant", c.default_schema) for c in bare)
    if regions:
        targets = [t for t in targets if t.region in regions]
    if connections:
        targets = [t for t in targets if t.connection_name in connections]
    filters = {"regions": regions or [], "connections": connections or [], "tenants": tenants or []}
    if not targets:
        raise NoTargets(f"No target matches scope {scope!r} with these filters.", details={"scope": scope, **filters})
    if scope == Scope.SINGLE and len(targets) != 1:
        raise NoTargets(
            f"Scope 'single' needs exactly one target; these filters match {len(targets)}.",
            details={"scope": scope, "matched": [t.label for t in targets[:20]], **filters},
        )
    return targets


def _read_database(connection: DatabaseConnection, schemas: list[str]) -> dict[str, history.SchemaState] | str:
    try:
        with psycopg.connect(**connection_params(connection).kwargs(autocommit=True)) as conn:
            return history.read_states(conn, schemas)
    except psycopg.Error as exc:
        return (exc.diag.message_primary or str(exc)).strip()


def schema_states(targets: list[Target]) -> dict[str, history.SchemaState | str]:
    """Read every target's history, one connection per database, databases in parallel.

    Returns target key -> state, or an error message when the database was unreachable.
    """
    by_connection: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_connection[target.connection_id].append(target)
    connections = DatabaseConnection.objects.in_bulk(list(by_connection))

    def read(connection_id: str):
        group = by_connection[connection_id]
        return group, _read_database(connections[uuid.UUID(connection_id)], [t.schema for t in group])

    result: dict[str, history.SchemaState | str] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(by_connection)) or 1) as pool:
        for group, states in pool.map(read, list(by_connection)):
            for target in group:
                result[target.key] = states if isinstance(states, str) else states[target.schema]
    return result


def target_plan(target: Target, state: history.SchemaState | str, mset: MigrationSet) -> dict:
    """Describe what a run would do on one target."""
    if isinstance(state, str):
        return {"target": target.label, "error": state, "current_version": None, "pending": [], "drift": []}
    pending = pending_of(state, mset)
    return {
        "target": target.label,
        "connection": target.connection_name,
        "schema": target.schema,
        "database_type": target.database_type,
        "region": target.region,
        "tenant": target.tenant_slug or None,
        "current_version": str(state.current) if state.current else None,
        "latest_version": str(mset.latest) if mset.latest else None,
        "pending": [str(s.version) if s.version else s.filename for s in pending],
        "drift": drift_of(state, mset),
        "schema_exists": state.exists,
    }


def fleet_status(*, regions: list[str] | None = None, connections: list[str] | None = None) -> list[dict]:
    """Return each target's current version, pending versions and drift."""
    try:
        targets = targets_resolve(scope=Scope.ALL, regions=regions, connections=connections)
    except NoTargets:
        return []
    sets = sets_load(strict=False)
    states = schema_states(targets)
    return [target_plan(t, states[t.key], sets[t.database_type]) for t in targets]


def execution_get(*, execution_id: uuid.UUID | str) -> MigrationExecution:
    try:
        return MigrationExecution.objects.get(pk=execution_id)
    except (MigrationExecution.DoesNotExist, ValidationError, ValueError) as exc:
        raise ExecutionNotFound(f"No execution with id {execution_id}.", details={"id": str(execution_id)}) from exc


def execution_list(*, status: str | None = None) -> QuerySet[MigrationExecution]:
    qs = MigrationExecution.objects.all()
    if status:
        qs = qs.filter(status=status)
    return qs


def execution_targets(*, execution: MigrationExecution) -> QuerySet[TargetRun]:
    return execution.targets.select_related("connection", "tenant").order_by("phase", "id")


def execution_eta(*, execution: MigrationExecution):
    """When an unfinished execution should end, from the mean duration of its targets so far (counters only)."""
    finished = (
        execution.targets_succeeded + execution.targets_failed + execution.targets_skipped + execution.targets_cancelled
    )
    remaining = execution.targets_total - finished
    if execution.is_finished or not execution.runs_timed or remaining <= 0:
        return None
    mean_ms = execution.run_duration_ms / execution.runs_timed
    parallel = max(1, min(execution.batch_size, remaining))
    return timezone.now() + timedelta(milliseconds=mean_ms * remaining / parallel)


def executions_running(*, execution_ids: list) -> dict:
    """The labels of the running targets of several executions, in one query: {execution id: [label, ...]}."""
    running: dict = defaultdict(list)
    rows = TargetRun.objects.filter(execution_id__in=execution_ids, status=TargetStatus.RUNNING).values_list(
        "execution_id", "connection__name", "schema_name"
    )
    for execution_id, name, schema in rows:
        running[execution_id].append(f"{name}/{schema}")
    return running


def execution_progress(*, execution: MigrationExecution, running_targets: list[str] | None = None) -> dict:
    """Totals (from the execution's counters), current targets, completion percentage, ETA, and whether the
    execution waits for a worker. Reads only the running target runs (or takes them from ``running_targets``)."""
    from migrations_runner.services.runner import execution_waiting_for_worker

    finished = (
        execution.targets_succeeded + execution.targets_failed + execution.targets_skipped + execution.targets_cancelled
    )
    total = execution.targets_total
    if running_targets is not None or execution.is_finished:
        labels = running_targets or []
    else:
        labels = executions_running(execution_ids=[execution.pk]).get(execution.pk, [])
    current = labels[:20]
    running = len(labels)
    pending = max(0, total - finished - running)
    eta = execution_eta(execution=execution)
    no_worker = execution_waiting_for_worker(execution, running=running, pending=pending)
    return {
        "total": total,
        "completed": execution.targets_succeeded,
        "failed": execution.targets_failed,
        "skipped": execution.targets_skipped,
        "cancelled": execution.targets_cancelled,
        "running": running,
        "pending": pending,
        "current_targets": current,
        "completion_percentage": round(100.0 * finished / total, 1) if total else 100.0,
        "estimated_completion": eta,
        "no_worker": no_worker,
        "state": "waiting_for_worker" if no_worker else ("running" if not execution.is_finished else "finished"),
    }


@dataclass
class RollbackPlan:
    """What rolling back an execution would undo, per target, or why it is refused."""

    runs: list[TargetRun] = field(default_factory=list)  # the target runs that applied something
    undo: dict[int, list[tuple[str, str]]] = field(default_factory=dict)  # run id -> [(version, undo script)]
    missing: list[str] = field(default_factory=list)
    refusal: str = ""
    sets: dict[str, MigrationSet] = field(default_factory=dict)


def rollback_plan(*, execution: MigrationExecution) -> RollbackPlan:
    """Per target, the versions a rollback of ``execution`` would undo (newest first) and by which undo script."""
    if execution.kind != ExecutionKind.MIGRATE or execution.dry_run:
        return RollbackPlan(refusal="Only a migrate execution that was not a dry run can be rolled back.")
    if not execution.is_finished:
        return RollbackPlan(refusal="The execution is still running; cancel it or wait for it to finish.")
    if execution.status == ExecutionStatus.ROLLED_BACK:
        return RollbackPlan(refusal="The execution has already been rolled back.")
    runs = [
        r
        for r in execution.targets.select_related("connection", "tenant").order_by("phase", "id")
        if any(a.get("kind") == "SQL" for a in r.applied_versions)
    ]
    if not runs:
        return RollbackPlan(refusal="The execution applied nothing, so there is nothing to roll back.")
    sets = sets_load(types={r.database_type for r in runs})
    plan = RollbackPlan(runs=runs, sets=sets)
    missing = set()
    for run in runs:
        steps = []
        for applied in reversed(run.applied_versions):
            if applied.get("kind") != "SQL":
                continue
            undo = sets[run.database_type].undo.get(Version.parse(applied["version"]))
            if undo is None:
                missing.add(f"{run.database_type}/U{applied['version']}__ (undo of {applied['script']})")
            steps.append((applied["version"], undo.filename if undo else ""))
        plan.undo[run.pk] = steps
    plan.missing = sorted(missing)
    if plan.missing:
        plan.refusal = f"Rollback refused: {len(plan.missing)} undo script(s) missing: {', '.join(plan.missing)}."
    return plan


def plan(
    *,
    scope: str,
    regions: list[str] | None = None,
    connections: list[str] | None = None,
    tenants: list[str] | None = None,
) -> list[dict]:
    """What a run of this scope would do per target; records and changes nothing."""
    targets = targets_resolve(scope=scope, regions=regions, connections=connections, tenants=tenants)
    sets = sets_load(types={t.database_type for t in targets})
    states = schema_states(targets)
    return [target_plan(t, states[t.key], sets[t.database_type]) for t in targets]


@dataclass
class PlanPreview:
    """What a run would do: per-target plans, counts per phase, type and region, warnings, and a fingerprint
    that changes whenever the fleet's state or the sets change (so a stale preview is never executed)."""

    targets: list[dict]
    by_phase: list[tuple[int, int, int]]  # (phase, targets, targets with work)
    by_type_region: list[tuple[str, str, int, int]]  # (database type, region, targets, with work)
    warnings: list[str]
    fingerprint: str
    pending_total: int


def plan_preview(
    *,
    scope: str,
    regions: list[str] | None = None,
    connections: list[str] | None = None,
    tenants: list[str] | None = None,
) -> PlanPreview:
    """Plan a run of this scope (reads each database's history, changes nothing) and summarise it."""
    import hashlib

    from migrations_runner.engine.targets import plan_phases

    targets = targets_resolve(scope=scope, regions=regions, connections=connections, tenants=tenants)
    sets = sets_load(types={t.database_type for t in targets})
    states = schema_states(targets)
    phases = plan_phases(targets, settings.MIGRATION_DEPENDENCIES).phases
    phase_of = {t.key: n for n, phase in enumerate(phases) for t in phase}
    rows = []
    for target in sorted(targets, key=lambda t: (phase_of[t.key], t.database_type, t.region, t.label)):
        row = target_plan(target, states[target.key], sets[target.database_type])
        row["phase"] = phase_of[target.key]
        row.setdefault("database_type", target.database_type)
        row.setdefault("region", target.region)
        rows.append(row)
    by_phase: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    by_type_region: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        busy = int(bool(row["pending"]))
        by_phase[row["phase"]][0] += 1
        by_phase[row["phase"]][1] += busy
        by_type_region[(row["database_type"], row["region"])][0] += 1
        by_type_region[(row["database_type"], row["region"])][1] += busy
    warnings = []
    drifted = [row["target"] for row in rows if row.get("drift")]
    if drifted:
        warnings.append(f"{len(drifted)} target(s) drifted and will fail before any change: {', '.join(drifted[:10])}")
    unreachable = [row["target"] for row in rows if row.get("error")]
    if unreachable:
        warnings.append(f"{len(unreachable)} target(s) could not be read: {', '.join(unreachable[:10])}")
    pending_by_type = defaultdict(set)
    for row in rows:
        pending_by_type[row["database_type"]].update(row["pending"])
    for kind, versions in sorted(pending_by_type.items()):
        mset = sets[kind]
        scripts = {str(s.version): s for s in mset.versions}
        loose = sorted((v for v in versions if v in scripts and not scripts[v].transactional), key=Version.parse)
        if loose:
            warnings.append(f"{kind}: version(s) {', '.join(loose)} run outside a transaction (statement by statement)")
        no_undo = sorted((v for v in versions if v in scripts and Version.parse(v) not in mset.undo), key=Version.parse)
        if no_undo:
            warnings.append(f"{kind}: version(s) {', '.join(no_undo)} have no undo script (cannot be rolled back)")
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr((row["target"], row["pending"], row.get("drift"), row.get("error"))).encode())
    for kind in sorted(sets):
        digest.update(repr([v["checksum"] for v in sets[kind].snapshot()["versions"]]).encode())
    return PlanPreview(
        targets=rows,
        by_phase=[(phase, *counts) for phase, counts in sorted(by_phase.items())],
        by_type_region=[(kind, region, *counts) for (kind, region), counts in sorted(by_type_region.items())],
        warnings=warnings,
        fingerprint=digest.hexdigest()[:32],
        pending_total=sum(len(row["pending"]) for row in rows),
    )


STUCK_AFTER = timedelta(hours=6)


def migrations_health() -> dict:
    """Whether migrations can run: valid sets, a sane dependency DAG, and no execution stuck for hours."""
    from migrations_runner.checks import check_dependencies

    sets = load_sets(settings.MIGRATIONS_DIR)
    problems = [f"{t}/{p}" for t, s in sets.items() for p in s.problems]
    problems += [error.msg for error in check_dependencies()]
    stuck = MigrationExecution.objects.filter(
        status__in=["pending", "in_progress"], created_at__lt=timezone.now() - STUCK_AFTER
    ).count()
    running = MigrationExecution.objects.filter(status="in_progress").count()
    return {
        "status": "healthy" if not problems and not stuck else "unhealthy",
        "timestamp": timezone.now(),
        "sets": {
            t: {"versions": len(s.versions), "latest": str(s.latest) if s.latest else None} for t, s in sets.items()
        },
        "problems": problems,
        "executions_in_progress": running,
        "executions_stuck": stuck,
    }


def schedule_list() -> QuerySet[MigrationSchedule]:
    return MigrationSchedule.objects.select_related("q_schedule").all()


def schedule_get(*, schedule_id) -> MigrationSchedule:
    try:
        return MigrationSchedule.objects.get(pk=int(schedule_id))
    except (MigrationSchedule.DoesNotExist, ValueError) as exc:
        raise ScheduleNotFound(f"No schedule with id {schedule_id}.", details={"id": str(schedule_id)}) from exc
