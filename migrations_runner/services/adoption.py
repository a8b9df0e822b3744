"""Taking over targets migrated elsewhere: adopting Flyway's history, and baselining targets migrated by hand.

Both write only the targets' own history tables (``infra_schema_history``), each target in one transaction
under its migration lock (``engine/flyway.py``); nothing is recorded in the control database besides the logs.
Both return a JSON-able report per target; a dry run reads and writes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import psycopg
from django.conf import settings

from connections import selectors as registry
from connections.exceptions import ConnectionNotFound, TenantNotFound
from connections.models import DatabaseConnection
from connections.services import connection_params
from infra_site.errors import Conflict, ValidationFailed
from migrations_runner import selectors
from migrations_runner.engine import flyway
from migrations_runner.engine.apply import pending_of
from migrations_runner.engine.history import SchemaState
from migrations_runner.engine.sets import MigrationSet, Version
from migrations_runner.engine.targets import Target
from migrations_runner.exceptions import TargetUnreachable
from migrations_runner.models import Scope
from migrations_runner.selection import TargetSelection

logger = logging.getLogger(__name__)

# The scope whose targets on a connection are the connection's own (its default schema), not the tenants it hosts.
OWN_SCOPE = {"admin": Scope.ADMIN, "shared": Scope.REGIONAL, "analytics": Scope.REGIONAL, "tenant": Scope.TENANT}
_MAX_DATABASES_AT_ONCE = 8

_Work = Callable[[psycopg.Connection, Target], dict[str, Any]]


def _require_named(selection: TargetSelection) -> None:
    """Raise ``TenantNotFound`` / ``ConnectionNotFound`` (404) for a tenant or connection the selection names
    that the registry does not hold."""
    if selection.tenants:
        known = set(registry.tenant_list().filter(slug__in=selection.tenants).values_list("slug", flat=True))
        unknown = [slug for slug in selection.tenants if slug not in known]
        if unknown:
            raise TenantNotFound(f"No tenant with slug {', '.join(unknown)}.", details={"tenants": unknown})
    if selection.connections:
        known = set(registry.connection_list(names=list(selection.connections)).values_list("name", flat=True))
        unknown = [name for name in selection.connections if name not in known]
        if unknown:
            raise ConnectionNotFound(f"No connection named {', '.join(unknown)}.", details={"connections": unknown})


def baseline_selection(*, tenant: str | None = None, connection: str | None = None) -> TargetSelection:
    """The selection of the one target a baseline names: a tenant's schema, or a connection's own target (its
    default schema, not the tenant schemas it hosts). 400 unless exactly one is given, 404 when unknown."""
    if tenant and not connection:
        registry.tenant_get(slug=tenant)
        return TargetSelection(scope=Scope.SINGLE, tenants=[tenant])
    if connection and not tenant:
        found = registry.connection_get_by_name(name=connection)
        return TargetSelection(scope=OWN_SCOPE[found.database_type], connections=[found.name])
    message = "Name either a tenant or a connection."
    raise ValidationFailed(message, details={"tenant": [message], "connection": [message]})


def _describe(target: Target) -> dict[str, Any]:
    return {
        "target": target.label,
        "connection": target.connection_name,
        "schema": target.schema,
        "database_type": target.database_type,
        "tenant": target.tenant_slug or None,
    }


def _error_message(exc: psycopg.Error, target: Target) -> str:
    if exc.sqlstate == "55P03":
        return f"another run holds the migration lock of schema {target.schema}; try again when it has finished"
    return (exc.diag.message_primary or str(exc)).strip()


def _on_each_database(targets: list[Target], work: _Work, failed: Callable[[Target, str], dict]) -> dict[str, dict]:
    """Run ``work`` on every target, one connection per database, databases in parallel; return key -> report.

    A database that cannot be reached, or a target whose work raises a database error, gets ``failed``'s report.
    """
    by_connection: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_connection[target.connection_id].append(target)
    connections = DatabaseConnection.objects.in_bulk([uuid.UUID(pk) for pk in by_connection])

    def on_database(connection_id: str) -> list[tuple[Target, dict]]:
        group = by_connection[connection_id]
        params = connection_params(connections[uuid.UUID(connection_id)])
        try:
            conn = psycopg.connect(**params.kwargs(autocommit=True))
        except psycopg.Error as exc:
            message = (exc.diag.message_primary or str(exc)).strip()
            return [(target, failed(target, message)) for target in group]
        reports = []
        with conn:
            for target in group:
                try:
                    reports.append((target, work(conn, target)))
                except psycopg.Error as exc:
                    reports.append((target, failed(target, _error_message(exc, target))))
                    if conn.broken:
                        reports += [(t, failed(t, "the connection was lost")) for t in group[len(reports) :]]
                        break
        return reports

    result: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=min(_MAX_DATABASES_AT_ONCE, len(by_connection)) or 1) as pool:
        for reports in pool.map(on_database, list(by_connection)):
            result.update((target.key, report) for target, report in reports)
    return result


# --- adoption ---------------------------------------------------------------------------------------------------


def _adoption_report(target: Target, result: flyway.AdoptionResult) -> dict[str, Any]:
    plan = result.plan or flyway.AdoptionPlan()
    return {
        **_describe(target),
        "status": result.status,
        "message": result.message,
        "flyway_version": str(plan.flyway_version) if plan.flyway_version is not None else None,
        "imported": [item.as_dict() for item in plan.imports],
        "already_recorded": plan.already_recorded,
        "drift": [finding.as_dict() for finding in plan.drift],
        "missing_from_set": [finding.as_dict() for finding in plan.missing],
        "failed_rows": [finding.as_dict() for finding in plan.failed],
        "skipped": [finding.as_dict() for finding in plan.skipped],
        "warnings": plan.warnings,
        "pending_after": plan.pending if result.plan else [],
    }


def flyway_adopt(
    *, selection: TargetSelection, actor: str, dry_run: bool = False, accept_drift: bool = False, table: str = ""
) -> dict[str, Any]:
    """Import the Flyway history of every selected target that has one into our history; return the report.

    A target with drift or versions missing from the set is refused (nothing imported) unless ``accept_drift``.
    Flyway's history is read from ``table``, else the set's configured table, else ``flyway_schema_history`` or
    Flyway's older ``schema_version``; targets without one are reported and left alone. Running it again imports
    nothing new.
    """
    _require_named(selection)
    targets = selectors.targets_resolve(selection)
    sets = selectors.sets_load(types={t.database_type for t in targets})

    def adopt(conn: psycopg.Connection, target: Target) -> dict[str, Any]:
        result = flyway.adopt_schema(
            conn,
            schema=target.schema,
            mset=sets[target.database_type],
            actor=actor,
            accept_drift=accept_drift,
            dry_run=dry_run,
            lock_wait_s=settings.MIGRATION_LOCK_WAIT,
            table=table,
            context=target.placeholders(timestamp=selectors.plan_timestamp(), environment=settings.ENVIRONMENT),
        )
        return _adoption_report(target, result)

    def failed(target: Target, message: str) -> dict[str, Any]:
        return _adoption_report(target, flyway.AdoptionResult("error", message))

    by_key = _on_each_database(targets, adopt, failed)
    reports = [by_key[t.key] for t in targets]
    for report in reports:
        log = logger.warning if report["status"] in ("refused", "error") or report["drift"] else logger.info
        log(
            "flyway adoption",
            extra={
                "target": report["target"],
                "status": report["status"],
                "dry_run": dry_run,
                "accept_drift": accept_drift,
                "flyway_version": report["flyway_version"],
                "imported": len(report["imported"]),
                "drift": len(report["drift"]),
                "missing_from_set": len(report["missing_from_set"]),
                "failed_rows": len(report["failed_rows"]),
                "actor": actor,
                **({"error": report["message"]} if report["status"] == "error" else {}),
            },
        )
    statuses = [r["status"] for r in reports]
    return {
        "dry_run": dry_run,
        "accept_drift": accept_drift,
        "count": len(reports),
        "adopted": statuses.count("adopted"),
        "refused": statuses.count("refused"),
        "unreadable": statuses.count("error"),
        "drifted": sum(1 for r in reports if r["drift"] or r["missing_from_set"]),
        "targets": reports,
    }


def adoption_needs_attention(report: dict[str, Any]) -> bool:
    """Tell whether an adoption report holds a refusal, an error, or drift that was not accepted."""
    if report["refused"] or report["unreadable"]:
        return True
    return bool(report["drifted"]) and not report["accept_drift"]


# --- baselines --------------------------------------------------------------------------------------------------


def parse_baseline_version(version: str) -> Version:
    """The version a baseline names; ``ValidationFailed`` (400, naming the field) when it is not one above 0."""
    try:
        return flyway.baseline_version(version)
    except ValueError as exc:
        raise ValidationFailed(
            f"Invalid version {str(version)[:50]!r}: {exc}", details={"version": [str(exc)]}
        ) from exc


def _pending_after(state: SchemaState, version: Version, mset: MigrationSet) -> list[str]:
    after = replace(state, baseline=version if state.baseline is None else max(state.baseline, version))
    return [str(s.version) if s.version else s.filename for s in pending_of(after, mset)]


def target_baseline(
    *,
    selection: TargetSelection,
    version: str,
    actor: str,
    dry_run: bool = False,
    force: bool = False,
    reason: str = "",
) -> dict[str, Any]:
    """Mark every selected target as being at ``version`` without running anything; return the report.

    Refused as a whole (``Conflict``, 409, nothing written) when a target already has history at or above the
    version or its schema does not exist, and when its history shows versions at or below it undone (the schema
    lacks them) unless ``force`` with a ``reason``, which the BASELINE row and the log record;
    ``TargetUnreachable`` (400) when a target cannot be read.
    """
    parsed = parse_baseline_version(version)
    reason = reason.strip()
    if force and not reason:
        raise ValidationFailed(
            "A forced baseline needs a reason (it is recorded in the history).",
            details={"reason": ["Required with force."]},
        )
    _require_named(selection)
    targets = selectors.targets_resolve(selection)
    read = selectors.schema_states(targets)
    unreachable = {t.label: s for t in targets if isinstance(s := read[t.key], str)}
    if unreachable:
        raise TargetUnreachable(
            f"{len(unreachable)} target(s) could not be read; nothing was baselined.", details={"targets": unreachable}
        )
    states = {key: state for key, state in read.items() if isinstance(state, SchemaState)}  # every one, now
    conflicts = {t.label: c for t in targets if (c := flyway.baseline_conflict(states[t.key], parsed))}
    if conflicts:
        first, reason = next(iter(conflicts.items()))
        raise Conflict(
            f"Baseline at version {parsed} refused for {len(conflicts)} target(s) (first: {first}: {reason}); "
            "nothing was baselined.",
            code="baseline_refused",
            details={"targets": conflicts},
        )
    undone = {t.label: [str(v) for v in u] for t in targets if (u := flyway.baseline_undone(states[t.key], parsed))}
    if undone and not force:
        first, versions = next(iter(undone.items()))
        raise Conflict(
            f"Baseline at version {parsed} refused: {len(undone)} target(s) have undone versions it would count as "
            f"applied (first: {first}: {', '.join(versions)}); nothing was baselined. Baseline with force and a "
            "reason if the schema does hold them.",
            code="baseline_over_undone",
            details={"undone": undone},
        )
    sets = selectors.sets_load(types={t.database_type for t in targets}, strict=False)

    def report(target: Target, status: str, message: str) -> dict[str, Any]:
        mset, state = sets[target.database_type], states[target.key]
        warnings = []
        if mset.latest is not None and parsed > mset.latest:
            warnings.append(f"version {parsed} is above the latest version of the {mset.database_type} set")
        if target.label in undone:
            warnings.append(f"forced over undone version(s) {', '.join(undone[target.label])}: {reason}")
        return {
            **_describe(target),
            "status": status,
            "message": message,
            "version": str(parsed),
            "from_version": str(state.current) if state.current else None,
            "pending_after": _pending_after(state, parsed, mset) if status == "baselined" else [],
            "warnings": warnings,
        }

    if dry_run:
        by_key = {t.key: report(t, "baselined", f"would be baselined at version {parsed}") for t in targets}
    else:

        def baseline(conn: psycopg.Connection, target: Target) -> dict[str, Any]:
            refusal = flyway.baseline_schema(
                conn,
                schema=target.schema,
                version=parsed,
                installed_by=actor[:100],
                lock_wait_s=settings.MIGRATION_LOCK_WAIT,
                force_reason=reason if force else "",
            )
            if refusal:  # a run changed the target since it was checked above
                return report(target, "refused", refusal)
            return report(target, "baselined", f"baselined at version {parsed}")

        by_key = _on_each_database(targets, baseline, lambda t, message: report(t, "error", message))
    reports = [by_key[t.key] for t in targets]
    for entry in reports:
        quiet = entry["status"] == "baselined" and entry["target"] not in undone
        (logger.info if quiet else logger.warning)(
            "target baseline",
            extra={
                "target": entry["target"],
                "status": entry["status"],
                "version": entry["version"],
                "from_version": entry["from_version"],
                "dry_run": dry_run,
                "actor": actor,
                **(
                    {"forced_over_undone": undone[entry["target"]], "reason": reason}
                    if entry["target"] in undone
                    else {}
                ),
                **({"error": entry["message"]} if entry["status"] != "baselined" else {}),
            },
        )
    return {"dry_run": dry_run, "version": str(parsed), "count": len(reports), "targets": reports}
