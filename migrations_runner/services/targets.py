"""Applying one target run, turning the engine's outcome into its fields, and finishing an execution."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable

from django.conf import settings
from django.utils import timezone

from migrations_runner.engine import apply as engine
from migrations_runner.engine.sets import MigrationSet, Version, placeholder_context
from migrations_runner.models import ExecutionKind, ExecutionStatus, MigrationExecution, TargetRun, TargetStatus
from migrations_runner.services.completion import execution_finished

logger = logging.getLogger(__name__)


def apply_options(
    execution: MigrationExecution,
    should_stop: Callable[[], bool],
    run: TargetRun | None = None,
    *,
    defer_lock_wait: Callable[[], bool] = lambda: False,
    on_lock_wait: Callable[[str], None] = lambda message: None,
    may_write: Callable[[], bool] = lambda: True,
) -> engine.ApplyOptions:
    """The engine's options for a target run of ``execution``: its own timeouts, else the settings', and the
    lock waits of the run's earlier claims."""
    options = execution.metadata.get("options", {})
    return engine.ApplyOptions(
        installed_by=execution.executed_by[:100],
        execution_id=str(execution.pk),
        statement_timeout_s=options.get("statement_timeout_s", settings.MIGRATION_TIMEOUT),
        lock_timeout_s=options.get("lock_timeout_s", settings.MIGRATION_LOCK_TIMEOUT),
        lock_wait_s=settings.MIGRATION_LOCK_WAIT,
        retry_attempts=settings.MIGRATION_RETRY_ATTEMPTS,
        out_of_order=bool(options.get("out_of_order", False)),
        should_stop=should_stop,
        lock_retries=settings.MIGRATION_LOCK_RETRIES,
        lock_retry_for_s=settings.MIGRATION_LOCK_RETRY_FOR,
        lock_attempts_before=run.lock_waits if run is not None else 0,
        lock_blocked_since=run.lock_blocked_since.timestamp() if run is not None and run.lock_blocked_since else None,
        defer_lock_wait=defer_lock_wait,
        on_lock_wait=on_lock_wait,
        join_scripts_ms=settings.MIGRATION_JOIN_SCRIPTS_MS,
        may_write=may_write,
    )


def run_timestamp(execution: MigrationExecution) -> str:
    """``${flyway:timestamp}`` of an execution's targets: when it was created (UTC), the same for all of them."""
    return _utc_text(execution.created_at)


@functools.lru_cache(maxsize=64)
def _utc_text(at: dt.datetime) -> str:
    """``at`` in UTC as ``${flyway:timestamp}`` writes it, once per time (a lane asks for every target)."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def target_spec(run: TargetRun, execution: MigrationExecution) -> engine.TargetSpec:
    return engine.TargetSpec(
        schema=run.schema_name,
        create_schema=run.schema_name != "public",
        context=placeholder_context(
            schema=run.schema_name,
            tenant_slug=run.tenant.slug if run.tenant else "",
            region=run.region,
            database_type=run.database_type,
            user=run.connection.username,
            database=run.connection.database_name,
            timestamp=run_timestamp(execution),
            environment=settings.ENVIRONMENT,
        ),
        label=f"{run.connection.name}/{run.schema_name}",
        # The plan read no version there: most likely a new schema, without history (see TargetSpec).
        expect_history=bool(run.from_version),
    )


def _check_snapshot(execution: MigrationExecution, mset: MigrationSet) -> str:
    """Return why the set on disk no longer matches the execution's snapshot, or ''."""
    snapshot = execution.metadata.get("sets", {}).get(mset.database_type)
    if snapshot is None:
        return ""
    current = mset.snapshot()
    if [v["checksum"] for v in snapshot["versions"]] != [v["checksum"] for v in current["versions"]] or [
        c["checksum"] for c in snapshot.get("callbacks", [])
    ] != [c["checksum"] for c in current["callbacks"]]:
        return f"the {mset.database_type} set changed on disk since the execution started"
    return ""


def target_run_apply(
    *,
    run: TargetRun,
    execution: MigrationExecution,
    sets: dict[str, MigrationSet],
    source: engine.ConnectionSource,
    should_stop: Callable[[], bool] = lambda: False,
    defer_lock_wait: Callable[[], bool] = lambda: False,
    on_lock_wait: Callable[[str], None] = lambda message: None,
    may_write: Callable[[], bool] = lambda: True,
) -> engine.TargetOutcome:
    """Apply (or, for a rollback execution, undo) the versions of one target run; touches no Django rows
    (``on_lock_wait`` may). ``may_write``: see ``engine.ApplyOptions``."""
    mset = sets[run.database_type]
    changed = _check_snapshot(execution, mset)
    if changed:
        return engine.TargetOutcome(status="failed", error=engine.TargetError(kind="set_changed", message=changed))
    options = apply_options(
        execution,
        should_stop,
        run,
        defer_lock_wait=defer_lock_wait,
        on_lock_wait=on_lock_wait,
        may_write=may_write,
    )
    if execution.kind == ExecutionKind.ROLLBACK:
        versions = [Version.parse(v) for v in run.pending_versions]
        return engine.undo_target(source, target_spec(run, execution), mset, versions, options)
    return engine.apply_target(source, target_spec(run, execution), mset, options)


def apply_outcome(run: TargetRun, outcome: engine.TargetOutcome) -> None:
    """Copy an engine outcome onto a target run (not saved)."""
    now = timezone.now()
    run.status = {"succeeded": TargetStatus.SUCCEEDED, "cancelled": TargetStatus.CANCELLED}.get(
        outcome.status, TargetStatus.FAILED
    )
    run.to_version = outcome.to_version
    run.applied_versions = [
        {"version": a.version, "script": a.script, "duration_ms": a.duration_ms, "kind": a.kind}
        | ({"notes": a.notes} if a.notes else {})
        for a in outcome.applied
    ]
    run.attempts = outcome.attempts
    run.lock_waits = outcome.lock_attempts
    run.waiting = outcome.lock_wait
    run.error = outcome.error.as_dict() if outcome.error else None
    run.completed_at = now
    run.duration_ms = int((now - run.started_at).total_seconds() * 1000) if run.started_at else None


def _failure_summary(execution: MigrationExecution) -> str:
    """One line on why an execution failed: how many targets, and the first failure with its error."""
    first = execution.targets.filter(status=TargetStatus.FAILED).select_related("connection").order_by("id").first()
    if first is None:
        return f"{execution.targets_skipped} target(s) skipped, {execution.targets_cancelled} cancelled"
    error = first.error or {}
    where = f" at version {error['version']}" if error.get("version") else ""
    state = f" [SQLSTATE {error['sqlstate']}]" if error.get("sqlstate") else ""
    message = error.get("message", "")
    return f"{execution.targets_failed} target(s) failed; first: {first.label}{where}: {message}{state}"


def finish_execution(execution: MigrationExecution) -> MigrationExecution:
    """Give a worked execution its final status (from its counters) and the reason when it did not complete."""
    if execution.cancel_requested and execution.targets_cancelled:
        status = ExecutionStatus.CANCELLED
    elif execution.targets_failed or execution.targets_skipped or execution.targets_cancelled:
        status = ExecutionStatus.FAILED
    else:
        status = ExecutionStatus.COMPLETED
    if status == ExecutionStatus.FAILED and not execution.error:
        execution.error = _failure_summary(execution)
    elif status == ExecutionStatus.FAILED and execution.targets_failed and execution.error.startswith("halted"):
        execution.error = f"{execution.error}; {_failure_summary(execution)}"
    execution.status = status
    execution.completed_at = timezone.now()
    execution.save(update_fields=["status", "completed_at", "error"])
    execution_finished(execution)
    logger.info(
        "execution finished",
        extra={"execution": str(execution.pk), "kind": execution.kind, "status": status, "scope": execution.scope},
    )
    return execution
