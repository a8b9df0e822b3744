"""Reads of the migrations app: sets, targets, executions, progress, and the fleet's state."""

from __future__ import annotations

import datetime as dt
import math
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypedDict

import psycopg
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection as control_db
from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from connections import selectors as registry
from connections.models import DatabaseConnection, DatabaseType, Tenant
from connections.services import connection_params
from infra_site.pagination import Cursor, keyset_page
from migrations_runner.engine import history
from migrations_runner.engine.apply import drift_of, out_of_order_of, out_of_order_refusal, pending_of
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
    Waiting,
)
from migrations_runner.selection import TargetSelection

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    class _LatestRun(TypedDict):
        latest_run_id: int | None

    # The targetable tenants, each annotated with the id of its latest target run.
    TenantTargets = QuerySet[WithAnnotations[Tenant, _LatestRun]]

SCOPE_TYPES = {
    Scope.ALL: ("admin", "shared", "analytics", "tenant"),
    Scope.ADMIN: ("admin",),
    Scope.REGIONAL: ("shared", "analytics"),
    Scope.TENANT: ("tenant",),
    Scope.SINGLE: ("admin", "shared", "analytics", "tenant"),
}


_sets_cache: dict[str, tuple[tuple, dict[str, MigrationSet]]] = {}


def _sets_signature(root) -> tuple:
    """Names, sizes and modification times of every file and folder of the sets (subfolders included): a change
    of any reloads them."""
    entries = []
    for directory, folders, files in os.walk(root) if root.is_dir() else ():
        folders.sort()
        for name in sorted(files) + folders:
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path)
            except OSError:
                entries.append((path, -1, -1))
                continue
            entries.append((path, stat.st_size, stat.st_mtime_ns))
    return (tuple(sorted(settings.MIGRATION_PLACEHOLDERS.items())), *entries)


def sets_read(root) -> dict[str, MigrationSet]:
    """Load the sets under ``root`` with the user placeholders of the settings (no cache)."""
    return load_sets(root, placeholders=settings.MIGRATION_PLACEHOLDERS)


def sets_load(*, types: Iterable[str] | None = None, strict: bool = True) -> dict[str, MigrationSet]:
    """Load the migration sets (cached per process until a file changes); with ``strict``, refuse problems."""
    root = settings.MIGRATIONS_DIR
    signature = _sets_signature(root)
    cached = _sets_cache.get(str(root))
    if cached is None or cached[0] != signature:
        cached = (signature, sets_read(root))
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
        tenant_slug=tenant.slug if tenant else "",
        tenant_id=tenant.pk if tenant else None,
        create_schema=schema != "public",
        database=connection.database_name,
        user=connection.username,
    )


# Parameters a filtered query of the registry holds besides the values of one IN list (its other conditions).
_OWN_PARAMS = 50


def _slices(values: Sequence[str], *, beside: int = 0) -> Iterator[Sequence[str]]:
    """``values`` in slices small enough for one IN list in a query with ``beside`` other values, under the
    control database's limit on parameters per query (SQLite's can be 999; PostgreSQL takes them all at once)."""
    limit = control_db.features.max_query_params
    size = max(1, limit - beside - _OWN_PARAMS) if limit else max(1, len(values))
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _tenants_named(tenants: QuerySet[Tenant], slugs: Sequence[str], *, beside: int = 0) -> list[Tenant]:
    """The tenants of ``tenants`` with one of ``slugs``, in slug order, looked up a slice of slugs at a time."""
    found = [tenant for part in _slices(slugs, beside=beside) for tenant in tenants.filter(slug__in=part)]
    return sorted(found, key=lambda tenant: tenant.slug)


def selection_unknown(selection: TargetSelection) -> dict[str, list[str]]:
    """What a selection names that the registry does not hold: regions no live connection is in, connection
    names no live connection has, tenant slugs no tenant of a live connection has; field -> one message each."""
    unknown: dict[str, list[str]] = {}
    live = registry.connection_list()
    if selection.regions:
        known = set(live.filter(region__in=selection.regions).values_list("region", flat=True))
        missing = [f"No connection is in region {r!r}." for r in selection.regions if r not in known]
        if missing:
            unknown["regions"] = missing
    if selection.connections:
        known = set(live.filter(name__in=selection.connections).values_list("name", flat=True))
        missing = [f"No connection named {n!r}." for n in selection.connections if n not in known]
        if missing:
            unknown["connections"] = missing
    if selection.tenants:
        tenants = registry.tenant_list()
        known = {
            slug
            for part in _slices(selection.tenants)
            for slug in tenants.filter(slug__in=part).values_list("slug", flat=True)
        }
        missing = [f"No tenant with slug {t!r}." for t in selection.tenants if t not in known]
        if missing:
            unknown["tenants"] = missing
    return unknown


def targets_resolve(selection: TargetSelection) -> list[Target]:
    """Return the targets of a selection; raise ``NoTargets`` when none match."""
    types = SCOPE_TYPES[Scope(selection.scope)]
    # The targets need no passwords: leave them encrypted (decrypting per tenant row costs).
    live = registry.connection_list(is_active=True).defer("password")
    if selection.regions:
        live = live.filter(region__in=selection.regions)
    if selection.connections:
        live = live.filter(name__in=selection.connections)
    targets: list[Target] = []
    if not selection.tenants:
        for connection in live.filter(database_type__in=[t for t in types if t != "tenant"]):
            targets.append(_target(connection, connection.database_type, connection.default_schema))
    if "tenant" in types:
        tenant_qs = registry.tenant_list_targetable().defer("connection__password")
        if selection.regions:
            tenant_qs = tenant_qs.filter(connection__region__in=selection.regions)
        if selection.connections:
            tenant_qs = tenant_qs.filter(connection__name__in=selection.connections)
        if selection.tenants:
            beside = len(selection.regions) + len(selection.connections)
            tenants = _tenants_named(tenant_qs, selection.tenants, beside=beside)
        else:
            tenants = list(tenant_qs)
        for tenant in tenants:
            targets.append(_target(tenant.connection, "tenant", tenant.schema_name, tenant))
        if not selection.tenants:
            # A dedicated tenant database that no tenant row describes still gets the tenant set.
            bare = live.filter(database_type=DatabaseType.TENANT).exclude(tenants__isnull=False)
            targets.extend(_target(c, "tenant", c.default_schema) for c in bare)
    details = selection.as_kwargs()
    if not targets:
        raise NoTargets(f"No target matches {selection.describe()}.", details=details)
    if selection.scope == Scope.SINGLE and len(targets) != 1:
        raise NoTargets(
            f"Scope 'single' needs exactly one target; {selection.describe()} matches {len(targets)}.",
            details={**details, "matched": [t.label for t in targets[:20]]},
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


SCHEMA_BYTES_QUERY = """
SELECT n.nspname, coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relkind IN ('r', 'm', 'p')), 0)::bigint
FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
WHERE n.nspname = ANY(%s)
GROUP BY n.nspname
"""


def schema_sizes(targets: list[Target]) -> dict[str, int]:
    """Each target's schema size in bytes (tables with their indexes and TOAST; 0 when the schema does not exist
    or the database is unreachable): one catalog query per database, databases in parallel."""
    by_connection: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_connection[target.connection_id].append(target)
    connections = DatabaseConnection.objects.in_bulk(list(by_connection))

    def read(connection_id: str) -> tuple[list[Target], dict[str, int]]:
        group = by_connection[connection_id]
        params = connection_params(connections[uuid.UUID(connection_id)])
        try:
            with psycopg.connect(**params.kwargs(autocommit=True)) as conn:
                rows = conn.execute(SCHEMA_BYTES_QUERY, [[t.schema for t in group]]).fetchall()
        except psycopg.Error:
            return group, {}
        return group, {schema: int(size) for schema, size in rows}

    sizes: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=min(8, len(by_connection)) or 1) as pool:
        for group, by_schema in pool.map(read, list(by_connection)):
            for target in group:
                sizes[target.key] = by_schema.get(target.schema, 0)
    return sizes


def plan_timestamp() -> str:
    """``${flyway:timestamp}`` for a plan: now (UTC), as a run started now would have it."""
    return timezone.now().astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def target_plan(
    target: Target, state: history.SchemaState | str, mset: MigrationSet, *, out_of_order: bool = False
) -> dict:
    """Describe what a run would do on one target (``out_of_order``: the run allows out-of-order versions)."""
    if isinstance(state, str):
        return {"target": target.label, "error": state, "current_version": None, "pending": [], "drift": []}
    context = target.placeholders(timestamp=plan_timestamp(), environment=settings.ENVIRONMENT)
    pending = pending_of(state, mset, context)
    late = out_of_order_of(state, pending)
    refused = bool(late) and not (out_of_order or mset.out_of_order)
    each = ("beforeEachMigrate", "afterEachMigrate")
    callbacks = [
        f"{c.event}: {c.filename}"
        for c in mset.callbacks
        if c.event in ("beforeMigrate", "afterMigrate") or (pending and c.event in each)
    ]
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
        "out_of_order": [str(s.version) for s in late],
        "refusal": out_of_order_refusal(late, state) if refused else "",
        "callbacks": callbacks,
        "schema_exists": state.exists,
    }


def fleet_status(selection: TargetSelection | None = None) -> list[dict]:
    """Return each target's current version, pending versions and drift."""
    try:
        targets = targets_resolve(selection or TargetSelection())
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
    return (
        execution.targets.select_related("connection", "tenant").defer("connection__password").order_by("phase", "id")
    )


# What a page of target runs shows (the API's list, the admin's detail page): the rest of the run, of its
# connection and of its tenant stays in the database.
LISTED_RUN_FIELDS = (
    *("id", "execution", "connection__name", "tenant__slug", "schema_name", "database_type", "region", "phase"),
    *("status", "from_version", "to_version", "pending_versions", "applied_versions", "attempts", "error"),
    *("skip_reason", "worker", "started_at", "completed_at", "duration_ms"),
)


def execution_targets_listed(*, execution: MigrationExecution) -> QuerySet[TargetRun]:
    """The runs of an execution as pages list them: ``execution_targets`` reading only what a page shows."""
    return execution_targets(execution=execution).only(*LISTED_RUN_FIELDS)


@dataclass(frozen=True)
class TargetRunsPage:
    runs: list[TargetRun]
    count: int  # of the filtered runs, all pages
    next: Cursor | None
    previous: Cursor | None


def execution_targets_page(
    *, execution: MigrationExecution, filters: dict[str, str], cursor: Cursor, limit: int
) -> TargetRunsPage:
    """One page of an execution's runs (``filters`` on status, database type or region), by key: as fast at the
    last page of 10,000 runs as at the first."""
    runs = execution_targets_listed(execution=execution).filter(**filters)
    page = keyset_page(runs, ("phase", "id"), cursor, limit)
    return TargetRunsPage(runs=page.rows, count=runs.count(), next=page.next, previous=page.previous)


def execution_summary(*, execution: MigrationExecution) -> dict:
    """The JSON summary of an execution: status, progress and each target run."""
    runs = execution_targets(execution=execution)
    return {
        "id": str(execution.pk),
        "kind": execution.kind,
        "status": execution.status,
        "scope": execution.scope,
        "dry_run": execution.dry_run,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
        "progress": execution_progress(execution=execution),
        "targets": [
            {
                "target": run.label,
                "database_type": run.database_type,
                "region": run.region,
                "phase": run.phase,
                "status": run.status,
                "from_version": run.from_version or None,
                "to_version": run.to_version or None,
                "pending": run.pending_versions,
                "applied": [a["version"] or a["script"] for a in run.applied_versions],
                "error": run.error,
                "skip_reason": run.skip_reason or None,
                "worker": run.worker or None,
            }
            for run in runs
        ],
    }


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
        "state": _progress_state(execution, no_worker),
    }


def _progress_state(execution: MigrationExecution, no_worker: bool) -> str:
    if execution.is_finished:
        return "finished"
    if execution.waiting == Waiting.APPROVAL:
        return "awaiting_approval"
    if execution.waiting == Waiting.SOAK:
        return "soaking"
    return "waiting_for_worker" if no_worker else "running"


def execution_waves(*, execution: MigrationExecution) -> list[dict]:
    """Per canary wave: its size, counts per status, and state (``pending``, ``soaking``, ``awaiting_approval``,
    ``running``, ``done``, ``halted`` for the wave that broke its budget, ``skipped`` when none of it ran) with
    the gate's times. One aggregate query; [] without waves."""
    if not execution.waves:
        return []
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    rows = (
        TargetRun.objects.filter(execution=execution, wave__isnull=False)
        .order_by()
        .values("wave", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        if row["wave"] is not None:
            counts[row["wave"]][row["status"]] = row["n"]
    halted = execution.error.startswith("halted: wave")
    result = []
    for wave in execution.waves:
        by_status = counts.get(wave["wave"], {})
        running, pending = by_status.get(TargetStatus.RUNNING, 0), by_status.get(TargetStatus.PENDING, 0)
        worked = by_status.get(TargetStatus.SUCCEEDED, 0) + by_status.get(TargetStatus.FAILED, 0)
        if running:
            state = "running"
        elif not pending:
            state = "done" if worked else "skipped"
        elif execution.waiting and wave["phase"] == _next_wave_phase(execution):
            state = "awaiting_approval" if execution.waiting == Waiting.APPROVAL else "soaking"
        elif wave["phase"] == execution.current_phase and not execution.is_finished:
            state = "running"
        else:
            state = "pending"
        skipped = by_status.get(TargetStatus.SKIPPED, 0)
        if halted and skipped and f"wave {wave['wave']} " in execution.error:
            state = "halted"
        result.append(
            {
                "wave": wave["wave"],
                "size": wave["size"],
                "succeeded": by_status.get(TargetStatus.SUCCEEDED, 0),
                "failed": by_status.get(TargetStatus.FAILED, 0),
                "skipped": skipped,
                "cancelled": by_status.get(TargetStatus.CANCELLED, 0),
                "running": running,
                "pending": pending,
                "state": state,
                "opened_at": wave.get("opened_at"),
                "soak_until": wave.get("soak_until"),
                "approved_by": wave.get("approved_by"),
            }
        )
    return result


def _next_wave_phase(execution: MigrationExecution) -> int | None:
    """The phase of the first wave not yet opened (the one a gate holds)."""
    return next((w["phase"] for w in execution.waves if "opened_at" not in w and w["wave"] > 1), None)


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


def lint_of(sets: Mapping[str, MigrationSet], pending: Mapping[str, Iterable[str]]) -> list[dict]:
    """The lint findings of the scripts a run would apply (``pending``: database type -> versions and repeatable
    script names, as plans list them), script by script; [] when ``MIGRATION_LINT`` is off."""
    if settings.MIGRATION_LINT == "off":
        return []
    findings = []
    for kind in sorted(pending):
        mset = sets[kind]
        scripts = {str(s.version): s for s in mset.versions} | {s.filename: s for s in mset.repeatables}
        named = [scripts[name] for name in set(pending[kind]) if name in scripts]
        named.sort(key=lambda s: (s.version is None, s.version or Version((0,)), s.filename))
        for script in [*named, *(mset.callbacks if named else [])]:
            findings += [
                {"database_type": kind, "script": script.filename, "version": str(script.version or ""), **f.as_dict()}
                for f in script.findings
            ]
    return findings


def plan_lint(rows: list[dict]) -> list[dict]:
    """The lint findings of the scripts a plan's rows would apply (see ``lint_of``)."""
    pending: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.get("database_type"):
            pending[row["database_type"]].update(row["pending"])
    return lint_of(sets_load(types=set(pending), strict=False), pending)


def lint_blocking(findings: list[dict]) -> list[dict]:
    """The findings that refuse a run under ``MIGRATION_LINT=block``: errors not ignored with a reason."""
    if settings.MIGRATION_LINT != "block":
        return []
    return [f for f in findings if f["severity"] == "error" and not f["ignored"]]


def plan(selection: TargetSelection, *, out_of_order: bool = False) -> list[dict]:
    """What a run of this selection would do per target; records and changes nothing."""
    targets = targets_resolve(selection)
    sets = sets_load(types={t.database_type for t in targets})
    states = schema_states(targets)
    return [target_plan(t, states[t.key], sets[t.database_type], out_of_order=out_of_order) for t in targets]


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
    lint: list[dict] = field(default_factory=list)  # findings of the scripts the run would apply
    lint_blocked: bool = False  # MIGRATION_LINT=block and an error among them: the run would be refused


def plan_preview(selection: TargetSelection, *, out_of_order: bool = False) -> PlanPreview:
    """Plan a run of this selection (reads each database's history, changes nothing) and summarise it."""
    import hashlib

    from migrations_runner.engine.targets import plan_phases

    targets = targets_resolve(selection)
    sets = sets_load(types={t.database_type for t in targets})
    states = schema_states(targets)
    phases = plan_phases(targets, settings.MIGRATION_DEPENDENCIES).phases
    phase_of = {t.key: n for n, phase in enumerate(phases) for t in phase}
    rows = []
    for target in sorted(targets, key=lambda t: (phase_of[t.key], t.database_type, t.region, t.label)):
        row = target_plan(target, states[target.key], sets[target.database_type], out_of_order=out_of_order)
        row["phase"] = phase_of[target.key]
        row.setdefault("database_type", target.database_type)
        row.setdefault("region", target.region)
        rows.append(row)
    by_phase: dict[int, tuple[int, int]] = defaultdict(lambda: (0, 0))
    by_type_region: dict[tuple[str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))
    for row in rows:
        busy = int(bool(row["pending"]))
        seen, with_work = by_phase[row["phase"]]
        by_phase[row["phase"]] = (seen + 1, with_work + busy)
        key = (row["database_type"], row["region"])
        seen, with_work = by_type_region[key]
        by_type_region[key] = (seen + 1, with_work + busy)
    warnings = []
    drifted = [row["target"] for row in rows if row.get("drift")]
    if drifted:
        warnings.append(f"{len(drifted)} target(s) drifted and will fail before any change: {', '.join(drifted[:10])}")
    late = [row for row in rows if row.get("out_of_order")]
    if late:
        what = "are refused (allow out-of-order to apply them)" if any(r["refusal"] for r in late) else "run anyway"
        warnings.append(
            f"{len(late)} target(s) have version(s) out of order (below their highest applied version) and {what}: "
            + ", ".join(f"{row['target']} ({', '.join(row['out_of_order'])})" for row in late[:10])
        )
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
    lint = lint_of(sets, pending_by_type)
    blocked = bool(lint_blocking(lint))
    if blocked:
        warnings.append(f"{len(lint_blocking(lint))} lint error(s): the run would be refused (MIGRATION_LINT=block)")
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr((row["target"], row["pending"], row.get("drift"), row.get("error"))).encode())
    for kind in sorted(sets):
        digest.update(repr([v["checksum"] for v in sets[kind].snapshot()["versions"]]).encode())
    return PlanPreview(
        targets=rows,
        by_phase=[(phase, n, busy) for phase, (n, busy) in sorted(by_phase.items())],
        by_type_region=[(kind, region, n, busy) for (kind, region), (n, busy) in sorted(by_type_region.items())],
        warnings=warnings,
        fingerprint=digest.hexdigest()[:32],
        pending_total=sum(len(row["pending"]) for row in rows),
        lint=lint,
        lint_blocked=blocked,
    )


STUCK_AFTER = timedelta(hours=6)


def migrations_health() -> dict:
    """Whether migrations can run: valid sets, a sane dependency DAG, and no execution stuck for hours."""
    from migrations_runner.checks import check_dependencies

    sets = sets_read(settings.MIGRATIONS_DIR)
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


# --- The fleet as the control database knows it: each target's latest target run, never its database ---

# A target's state from its latest run: ``drifted`` when it failed on drift, ``failing`` when it failed otherwise,
# else ``behind`` or ``up_to_date`` by the versions of its set after the one the run left it at; ``unknown`` when
# it never ran.
FLEET_STATES = ("up_to_date", "behind", "drifted", "failing", "unknown")
FLEET_PER_PAGE = 100
_TYPE_ORDER = {kind: index for index, kind in enumerate(SCOPE_TYPES[Scope.ALL])}
_DEFAULT_SCHEMA_TYPES = (DatabaseType.ADMIN, DatabaseType.SHARED, DatabaseType.ANALYTICS)


def _latest_run_id(connection_field: str, schema_field: str) -> Subquery:
    """The id of the latest target run of the target an outer row names (the index ``target_run_latest``)."""
    return Subquery(
        TargetRun.objects.filter(connection_id=OuterRef(connection_field), schema_name=OuterRef(schema_field))
        .order_by("-id")
        .values("id")[:1]
    )


def _run_version() -> Case:
    """Where a run left its target: ``to_version`` once it succeeded (a full rollback leaves ''), else where it
    stopped or, when it never read the target (pending, or unreachable), where planning found it."""
    return Case(
        When(status=TargetStatus.SUCCEEDED, then=F("to_version")),
        default=Coalesce(NullIf(F("to_version"), Value("")), F("from_version")),
    )


def _error_kind() -> Coalesce:
    return Coalesce(KT("error__kind"), Value(""), output_field=CharField())


def version_pending_count(*, mset: MigrationSet | None, version: str | None) -> int | None:
    """How many versions of ``mset`` come after ``version`` ('' when none is applied); None when unknown."""
    if version is None or mset is None:
        return None
    if not version:
        return len(mset.versions)
    try:
        current = Version.parse(version)
    except ValueError:
        return None
    return sum(1 for script in mset.versions if script.require_version() > current)


def _state(run_status: str | None, error_kind: str, pending: int | None) -> str:
    if run_status is None:
        return "unknown"
    if run_status == TargetStatus.FAILED:
        return "drifted" if error_kind == "drift" else "failing"
    return "behind" if pending else "up_to_date"


@dataclass(frozen=True)
class FleetTarget:
    """One target of the fleet with what its latest target run says about it."""

    database_type: str
    region: str
    connection_name: str
    schema_name: str
    tenant_slug: str  # '' for a database's default schema
    tenant_name: str
    version: str | None  # None: never run
    pending: int | None
    state: str  # one of FLEET_STATES
    run_status: str
    error_kind: str
    error_message: str
    execution_id: uuid.UUID | None
    execution_status: str
    execution_created_at: datetime | None

    @property
    def key(self) -> str:
        """``t:<tenant slug>`` or ``c:<connection name>``: how the fleet page names a selected target."""
        return f"t:{self.tenant_slug}" if self.tenant_slug else f"c:{self.connection_name}"

    @property
    def label(self) -> str:
        return f"{self.connection_name}/{self.schema_name}"


@dataclass(frozen=True)
class FleetPage:
    targets: list[FleetTarget]
    total: int
    page: int
    per_page: int

    @property
    def num_pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def _runs_by_id(ids: list[int]) -> dict[int, Mapping[str, Any]]:
    """The fields of the given target runs (and of their executions) that the fleet shows, in one query."""
    if not ids:
        return {}
    rows = (
        TargetRun.objects.filter(pk__in=ids)
        .annotate(version=_run_version(), kind=_error_kind(), message=KT("error__message"))
        .values(
            "id", "status", "version", "kind", "message", "execution_id", "execution__status", "execution__created_at"
        )
    )
    return {row["id"]: row for row in rows}


def _fleet_target(
    values: Mapping[str, Any], run: Mapping[str, Any] | None, sets: dict[str, MigrationSet]
) -> FleetTarget:
    version = run["version"] if run else None
    pending = version_pending_count(mset=sets.get(values["database_type"]), version=version)
    return FleetTarget(
        database_type=values["database_type"],
        region=values["region"],
        connection_name=values["connection_name"],
        schema_name=values["schema_name"],
        tenant_slug=values.get("tenant_slug", ""),
        tenant_name=values.get("tenant_name", ""),
        version=version,
        pending=pending,
        state=_state(run["status"] if run else None, run["kind"] if run else "", pending),
        run_status=run["status"] if run else "",
        error_kind=run["kind"] if run else "",
        error_message=(run["message"] or "") if run else "",
        execution_id=run["execution_id"] if run else None,
        execution_status=run["execution__status"] if run else "",
        execution_created_at=run["execution__created_at"] if run else None,
    )


def _database_targets(
    database_type: str | None, region: str | None, sets: dict[str, MigrationSet]
) -> list[FleetTarget]:
    """The targets that are a database's default schema (admin, shared, analytics, and a dedicated tenant
    database no tenant describes), as ``targets_resolve`` finds them; two queries."""
    qs = registry.connection_list(is_active=True, database_type=database_type, region=region or None)
    qs = qs.filter(
        Q(database_type__in=_DEFAULT_SCHEMA_TYPES)
        | Q(database_type=DatabaseType.TENANT) & ~Exists(Tenant.objects.filter(connection=OuterRef("pk")))
    )
    rows = list(
        qs.annotate(latest_run_id=_latest_run_id("pk", "default_schema"))
        .values("database_type", "region", "latest_run_id", connection_name=F("name"), schema_name=F("default_schema"))
        .order_by()
    )
    runs = _runs_by_id([row["latest_run_id"] for row in rows if row["latest_run_id"]])
    targets = [_fleet_target(row, runs.get(row["latest_run_id"]), sets) for row in rows]
    return sorted(targets, key=lambda t: (_TYPE_ORDER.get(t.database_type, 9), t.region, t.connection_name))


def _tenant_targets(database_type: str | None, region: str | None) -> TenantTargets | None:
    """The tenants that are targets (active, on an active connection), each with its latest run's id."""
    if database_type and database_type != DatabaseType.TENANT:
        return None
    qs = registry.tenant_list_targetable()
    if region:
        qs = qs.filter(connection__region=region)
    return qs.annotate(latest_run_id=_latest_run_id("connection_id", "schema_name"))


def _tenant_run_groups(tenants: TenantTargets) -> list[Mapping[str, Any]]:
    """The latest runs of ``tenants`` counted by (version, status, error kind): one aggregate query."""
    return list(
        TargetRun.objects.filter(pk__in=tenants.values("latest_run_id"))
        .annotate(version=_run_version(), kind=_error_kind())
        .values("version", "status", "kind")
        .annotate(n=Count("id"))
        .order_by()
    )


class _Fleet:
    """The fleet narrowed by database type and region, read lazily so that its page and its counts share queries."""

    def __init__(self, database_type: str | None, region: str | None) -> None:
        self.database_type, self.region = database_type, region
        self.sets = sets_load(strict=False)
        self.tenant_set = self.sets.get(DatabaseType.TENANT)

    @cached_property
    def databases(self) -> list[FleetTarget]:
        return _database_targets(self.database_type, self.region, self.sets)

    @cached_property
    def tenants(self) -> TenantTargets | None:
        return _tenant_targets(self.database_type, self.region)

    @cached_property
    def tenant_total(self) -> int:
        return self.tenants.count() if self.tenants is not None else 0

    @cached_property
    def tenant_groups(self) -> list[tuple[str, int, str]]:
        """(state, number of tenants, version) for each (version, status, error kind) of the tenants' latest runs."""
        if self.tenants is None:
            return []
        return [(self._group_state(group), group["n"], group["version"]) for group in _tenant_run_groups(self.tenants)]

    def _group_state(self, group: Mapping[str, Any]) -> str:
        pending = version_pending_count(mset=self.tenant_set, version=group["version"])
        return _state(group["status"], group["kind"], pending)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(FLEET_STATES, 0)
        for target in self.databases:
            counts[target.state] += 1
        counts["unknown"] += self.tenant_total
        for state, number, _ in self.tenant_groups:
            counts[state] += number
            counts["unknown"] -= number
        counts["total"] = sum(counts[state] for state in FLEET_STATES)
        return counts

    def _tenants_in_state(self, tenants: TenantTargets, state: str) -> TenantTargets:
        if state == "unknown":
            return tenants.filter(latest_run_id__isnull=True)
        latest = TargetRun.objects.filter(pk=OuterRef("latest_run_id")).annotate(
            version=_run_version(), kind=_error_kind()
        )
        if state == "drifted":
            return tenants.filter(Exists(latest.filter(status=TargetStatus.FAILED, kind="drift")))
        if state == "failing":
            return tenants.filter(Exists(latest.filter(status=TargetStatus.FAILED).exclude(kind="drift")))
        # Which versions are behind needs the set: take the versions the latest runs hold, classified here.
        versions = [version for group_state, _, version in self.tenant_groups if group_state == state]
        return tenants.filter(Exists(latest.exclude(status=TargetStatus.FAILED).filter(version__in=versions)))

    def page(self, state: str | None, number: int, per_page: int) -> FleetPage:
        databases = [t for t in self.databases if state in (None, t.state)]
        tenants = self.tenants
        if tenants is not None and state:
            tenants = self._tenants_in_state(tenants, state)
        tenant_total = self.tenant_total if not state else tenants.count() if tenants is not None else 0
        total = len(databases) + tenant_total
        number = min(max(1, number), max(1, math.ceil(total / per_page)))
        start, end = (number - 1) * per_page, number * per_page
        targets = databases[start:end]
        tenant_start, tenant_end = max(0, start - len(databases)), max(0, end - len(databases))
        if tenants is not None and tenant_end > tenant_start:
            rows = list(
                tenants.order_by("connection__region", "slug").values(
                    "latest_run_id",
                    "schema_name",
                    tenant_slug=F("slug"),
                    tenant_name=F("name"),
                    connection_name=F("connection__name"),
                    region=F("connection__region"),
                )[tenant_start:tenant_end]
            )
            runs = _runs_by_id([row["latest_run_id"] for row in rows if row["latest_run_id"]])
            targets += [
                _fleet_target(
                    {**row, "database_type": DatabaseType.TENANT},
                    runs.get(row["latest_run_id"]) if row["latest_run_id"] else None,
                    self.sets,
                )
                for row in rows
            ]
        return FleetPage(targets=targets, total=total, page=number, per_page=per_page)


def fleet_targets(
    *,
    database_type: str | None = None,
    region: str | None = None,
    state: str | None = None,
    page: int = 1,
    per_page: int = FLEET_PER_PAGE,
) -> FleetPage:
    """One page of the fleet's targets, by database type and region, each with its state from its latest target
    run; reads only the control database, in at most six queries whatever the page size or the fleet's size."""
    return _Fleet(database_type, region).page(state, page, per_page)


def fleet_counts(*, database_type: str | None = None, region: str | None = None) -> dict[str, int]:
    """How many targets are in each of ``FLEET_STATES``, and ``total``; four queries whatever the fleet's size."""
    return _Fleet(database_type, region).counts()


def fleet_overview(
    *,
    database_type: str | None = None,
    region: str | None = None,
    state: str | None = None,
    page: int = 1,
    per_page: int = FLEET_PER_PAGE,
) -> tuple[FleetPage, dict[str, int]]:
    """``fleet_targets`` and ``fleet_counts`` of one filter together, sharing their queries (seven at most)."""
    fleet = _Fleet(database_type, region)
    return fleet.page(state, page, per_page), fleet.counts()


def fleet_regions() -> list[str]:
    """The regions of the fleet's active connections, for the fleet's filters."""
    return list(
        registry.connection_list(is_active=True)
        .exclude(region="")
        .order_by("region")
        .values_list("region", flat=True)
        .distinct()
    )


def tenants_with_version(*, tenants: QuerySet[Tenant]) -> QuerySet[Tenant]:
    """``tenants`` annotated with ``latest_version``: where their latest target run left them (None: never run)."""
    latest = TargetRun.objects.filter(connection_id=OuterRef("connection_id"), schema_name=OuterRef("schema_name"))
    return tenants.annotate(latest_version=Subquery(latest.order_by("-id").annotate(v=_run_version()).values("v")[:1]))


def executions_running_count(*, execution_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The number of running target runs of each execution: one query grouped by execution."""
    if not execution_ids:
        return {}
    rows = (
        TargetRun.objects.filter(execution_id__in=execution_ids, status=TargetStatus.RUNNING)
        .values("execution_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["execution_id"]: row["n"] for row in rows}


@dataclass(frozen=True)
class ExecutionsOverview:
    latest: list[tuple[MigrationExecution, int]]  # (execution, its running target runs)
    waiting_for_worker: list[MigrationExecution]


def executions_overview(*, latest: int = 10) -> ExecutionsOverview:
    """The latest executions with their running counts, and the unfinished ones no worker has taken up; three
    queries."""
    from migrations_runner.services.runner import executions_waiting_for_worker

    recent = list(MigrationExecution.objects.order_by("-created_at")[:latest])
    unfinished = list(
        MigrationExecution.objects.filter(status__in=[ExecutionStatus.PENDING, ExecutionStatus.IN_PROGRESS])
    )
    running = executions_running_count(execution_ids=list({e.pk for e in recent + unfinished}))

    def pending(execution: MigrationExecution) -> int:
        finished = (
            execution.targets_succeeded
            + execution.targets_failed
            + execution.targets_skipped
            + execution.targets_cancelled
        )
        return max(0, execution.targets_total - finished - running.get(execution.pk, 0))

    waiting = executions_waiting_for_worker(unfinished, pending={e.pk: pending(e) for e in unfinished})
    return ExecutionsOverview(latest=[(e, running.get(e.pk, 0)) for e in recent], waiting_for_worker=waiting)


def schedule_executions(*, schedule: MigrationSchedule, limit: int = 20) -> QuerySet[MigrationExecution]:
    """The latest executions a schedule started (``executed_by`` is ``schedule:<name>``)."""
    return MigrationExecution.objects.filter(executed_by=f"schedule:{schedule.name}").order_by("-created_at")[:limit]
