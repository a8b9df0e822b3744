"""Reads of what a run would do: ``plan`` and ``plan_preview`` connect to every selected target database;
``target_plan``, the lint functions and ``rollback_plan`` read only the sets and the control database."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.utils import timezone

from migrations_runner.engine import history
from migrations_runner.engine.apply import drift_of, out_of_order_of, out_of_order_refusal, pending_of
from migrations_runner.engine.sets import MigrationSet, Version
from migrations_runner.engine.targets import Target, plan_phases
from migrations_runner.models import ExecutionKind, ExecutionStatus, MigrationExecution, TargetRun
from migrations_runner.selection import TargetSelection
from migrations_runner.selectors.sets import sets_load
from migrations_runner.selectors.targets import schema_states, targets_resolve


@dataclass(frozen=True, slots=True)
class TargetPlan:
    """What a run would do on one target. With ``error`` (why its history could not be read) nothing of its
    schema is known: no versions, nothing pending."""

    target: str  # the target's label: connection/schema
    connection: str
    schema: str
    database_type: str
    region: str
    tenant: str | None
    current_version: str | None = None
    latest_version: str | None = None
    pending: list[str] = field(default_factory=list)  # versions, and names of the repeatable scripts
    drift: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)  # pending versions below the highest applied one
    refusal: str = ""  # why a run would refuse the target ('' when it would not)
    callbacks: list[str] = field(default_factory=list)  # "event: script" of the callbacks a run would run
    schema_exists: bool = False
    error: str | None = None
    phase: int | None = None  # the phase a run would put it in (``plan_preview`` places it)


def plan_timestamp() -> str:
    """``${flyway:timestamp}`` for a plan: now (UTC), as a run started now would have it."""
    return timezone.now().astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def target_plan(
    target: Target,
    state: history.SchemaState | str,
    mset: MigrationSet,
    *,
    out_of_order: bool = False,
    timestamp: str | None = None,
) -> TargetPlan:
    """Describe what a run would do on one target (``out_of_order``: the run allows out-of-order versions;
    ``timestamp``: the run's ``plan_timestamp()``, read once for many targets)."""
    located = TargetPlan(
        target=target.label,
        connection=target.connection_name,
        schema=target.schema,
        database_type=target.database_type,
        region=target.region,
        tenant=target.tenant_slug or None,
    )
    if isinstance(state, str):
        return replace(located, error=state)
    context = target.placeholders(timestamp=timestamp or plan_timestamp(), environment=settings.ENVIRONMENT)
    pending = pending_of(state, mset, context)
    late = out_of_order_of(state, pending)
    refused = bool(late) and not (out_of_order or mset.out_of_order)
    each = ("beforeEachMigrate", "afterEachMigrate")
    return replace(
        located,
        current_version=str(state.current) if state.current else None,
        latest_version=str(mset.latest) if mset.latest else None,
        pending=[str(s.version) if s.version else s.filename for s in pending],
        drift=drift_of(state, mset),
        out_of_order=[str(s.version) for s in late],
        refusal=out_of_order_refusal(late, state) if refused else "",
        callbacks=[
            f"{c.event}: {c.filename}"
            for c in mset.callbacks
            if c.event in ("beforeMigrate", "afterMigrate") or (pending and c.event in each)
        ],
        schema_exists=state.exists,
    )


def target_plans(
    targets: Iterable[Target],
    states: Mapping[str, history.SchemaState | str],
    sets: Mapping[str, MigrationSet],
    *,
    out_of_order: bool = False,
) -> dict[str, TargetPlan]:
    """``target_plan`` of each target (target key -> plan), for a run starting now.

    Worked out once per set and distinct history (``SchemaState.signature``) when no repeatable script of the
    set uses placeholders, since only those make a target's plan depend on the target: a fleet of 10,000
    up-to-date tenants is one plan, relabelled.
    """
    at = plan_timestamp()
    alike: dict[tuple, TargetPlan] = {}
    plans: dict[str, TargetPlan] = {}
    for target in targets:
        state, mset = states[target.key], sets[target.database_type]
        key = None
        if (
            not isinstance(state, str)
            and state.signature is not None
            and not any(script.uses_placeholders for script in mset.repeatables)
        ):
            key = (target.database_type, state.exists, state.has_history, state.signature)
        shared = alike.get(key) if key else None
        if shared is None:
            plans[target.key] = target_plan(target, state, mset, out_of_order=out_of_order, timestamp=at)
            if key:
                alike[key] = plans[target.key]
        else:
            plans[target.key] = replace(
                shared,
                target=target.label,
                connection=target.connection_name,
                schema=target.schema,
                region=target.region,
                tenant=target.tenant_slug or None,
            )
    return plans


def plan(selection: TargetSelection, *, out_of_order: bool = False) -> list[TargetPlan]:
    """What a run of this selection would do per target (reads each database's history); changes nothing."""
    targets = targets_resolve(selection)
    sets = sets_load(types={t.database_type for t in targets})
    plans = target_plans(targets, schema_states(targets), sets, out_of_order=out_of_order)
    return [plans[t.key] for t in targets]


def lint_of(sets: Mapping[str, MigrationSet], pending: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
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


def plan_lint(plans: list[TargetPlan]) -> list[dict[str, Any]]:
    """The lint findings of the scripts a plan's targets would apply (see ``lint_of``)."""
    pending: dict[str, set[str]] = defaultdict(set)
    for target in plans:
        if target.error is None:
            pending[target.database_type].update(target.pending)
    return lint_of(sets_load(types=set(pending), strict=False), pending)


def lint_blocking(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The findings that refuse a run under ``MIGRATION_LINT=block``: errors not ignored with a reason."""
    if settings.MIGRATION_LINT != "block":
        return []
    return [f for f in findings if f["severity"] == "error" and not f["ignored"]]


@dataclass
class PlanPreview:
    """What a run would do: per-target plans, counts per phase, type and region, warnings, and a fingerprint
    that changes whenever the fleet's state or the sets change (so a stale preview is never executed)."""

    targets: list[TargetPlan]  # each placed in its phase
    by_phase: list[tuple[int, int, int]]  # (phase, targets, targets with work)
    by_type_region: list[tuple[str, str, int, int]]  # (database type, region, targets, with work)
    warnings: list[str]
    fingerprint: str
    pending_total: int
    lint: list[dict[str, Any]] = field(default_factory=list)  # findings of the scripts the run would apply
    lint_blocked: bool = False  # MIGRATION_LINT=block and an error among them: the run would be refused


def plan_preview(selection: TargetSelection, *, out_of_order: bool = False) -> PlanPreview:
    """Plan a run of this selection (reads each database's history, changes nothing) and summarise it."""
    targets = targets_resolve(selection)
    sets = sets_load(types={t.database_type for t in targets})
    states = schema_states(targets)
    phases = plan_phases(targets, settings.MIGRATION_DEPENDENCIES).phases
    phase_of = {t.key: n for n, phase in enumerate(phases) for t in phase}
    rows = []
    by_phase: dict[int, tuple[int, int]] = defaultdict(lambda: (0, 0))
    by_type_region: dict[tuple[str, str], tuple[int, int]] = defaultdict(lambda: (0, 0))
    plans = target_plans(targets, states, sets, out_of_order=out_of_order)
    for target in sorted(targets, key=lambda t: (phase_of[t.key], t.database_type, t.region, t.label)):
        phase = phase_of[target.key]
        row = plans[target.key]
        rows.append(replace(row, phase=phase))
        busy = int(bool(row.pending))
        seen, with_work = by_phase[phase]
        by_phase[phase] = (seen + 1, with_work + busy)
        key = (row.database_type, row.region)
        seen, with_work = by_type_region[key]
        by_type_region[key] = (seen + 1, with_work + busy)
    warnings = []
    drifted = [row.target for row in rows if row.drift]
    if drifted:
        warnings.append(f"{len(drifted)} target(s) drifted and will fail before any change: {', '.join(drifted[:10])}")
    late = [row for row in rows if row.out_of_order]
    if late:
        what = "are refused (allow out-of-order to apply them)" if any(r.refusal for r in late) else "run anyway"
        warnings.append(
            f"{len(late)} target(s) have version(s) out of order (below their highest applied version) and {what}: "
            + ", ".join(f"{row.target} ({', '.join(row.out_of_order)})" for row in late[:10])
        )
    unreachable = [row.target for row in rows if row.error]
    if unreachable:
        warnings.append(f"{len(unreachable)} target(s) could not be read: {', '.join(unreachable[:10])}")
    pending_by_type = defaultdict(set)
    for row in rows:
        pending_by_type[row.database_type].update(row.pending)
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
        digest.update(repr((row.target, row.pending, row.drift, row.error)).encode())
    for kind in sorted(sets):
        digest.update(repr([v["checksum"] for v in sets[kind].snapshot()["versions"]]).encode())
    return PlanPreview(
        targets=rows,
        by_phase=[(phase, n, busy) for phase, (n, busy) in sorted(by_phase.items())],
        by_type_region=[(kind, region, n, busy) for (kind, region), (n, busy) in sorted(by_type_region.items())],
        warnings=warnings,
        fingerprint=digest.hexdigest()[:32],
        pending_total=sum(len(row.pending) for row in rows),
        lint=lint,
        lint_blocked=blocked,
    )


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
