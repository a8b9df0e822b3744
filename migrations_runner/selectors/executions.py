"""Reads of executions and their target runs: lists, pages, progress, ETA, canary waves, the dashboard's overview.
Only the control database (and the lanes' signals in the cache) is read."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection as db_connection
from django.db.models import Count, QuerySet
from django.utils import timezone

from infra_site.keyset import Cursor, keyset_page
from migrations_runner.exceptions import ExecutionNotFound
from migrations_runner.models import ExecutionStatus, MigrationExecution, TargetRun, TargetStatus, Waiting
from migrations_runner.selectors.workers import execution_waiting_for_worker, executions_waiting_for_worker


def execution_get(*, execution_id: uuid.UUID | str, only: tuple[str, ...] = ()) -> MigrationExecution:
    """Return an execution by id (with ``only``, just those fields and its key: a row of 40 columns and kilobytes of
    JSON costs more to read than a page's caller needs); raise ``ExecutionNotFound``."""
    try:
        return (MigrationExecution.objects.only(*only) if only else MigrationExecution.objects).get(pk=execution_id)
    except (MigrationExecution.DoesNotExist, ValidationError, ValueError) as exc:
        raise ExecutionNotFound(f"No execution with id {execution_id}.", details={"id": str(execution_id)}) from exc


def execution_list(*, status: str | None = None) -> QuerySet[MigrationExecution]:
    """Return the executions, narrowed to one status when given, without their ``metadata`` (the sets and options
    each ran with: kilobytes of JSON an execution, which a list does not show)."""
    qs = MigrationExecution.objects.defer("metadata")
    if status:
        qs = qs.filter(status=status)
    return qs


def execution_targets(*, execution: MigrationExecution) -> QuerySet[TargetRun]:
    """Return the target runs of an execution, by phase, with their connection (its password left encrypted)."""
    return (
        execution.targets.select_related("connection", "tenant").defer("connection__password").order_by("phase", "id")
    )


# What a page of target runs shows (the API's list, the admin's detail page): the rest of the run, of its
# connection and of its tenant stays in the database.
LISTED_RUN_FIELDS = (
    *("id", "execution", "connection__name", "tenant__slug", "schema_name", "database_type", "region", "phase"),
    *("status", "from_version", "to_version", "pending_versions", "applied_versions", "attempts", "error"),
    *("skip_reason", "worker", "started_at", "completed_at", "duration_ms", "lock_waits", "waiting", "retry_at"),
)


def execution_targets_listed(*, execution: MigrationExecution) -> QuerySet[TargetRun]:
    """The runs of an execution as pages list them: ``execution_targets`` reading only what a page shows."""
    return execution_targets(execution=execution).only(*LISTED_RUN_FIELDS)


# What the API's pages show of each run, read as rows (``values(*LISTED_ROW_FIELDS)``), not model instances.
LISTED_ROW_FIELDS = tuple(name for name in LISTED_RUN_FIELDS if name != "execution")

# Set on a row of ``execution_target_rows_rendered``: the run's JSON as the API shows it.
RENDERED = "__rendered__"


# A run as the targets endpoint shows it (``TargetRunSerializer``'s fields, in its order): its id, connection and
# tenant, joined for each page (they can be renamed), then ``listed``, the rest of its JSON, which PostgreSQL keeps
# with a finished row (migration 0014) and a page writes for an unfinished one; a run with an error has none: the
# serializer shows it, redacted per caller.
# The query's text is made of constants and the models' table names; the keys are its one parameter.
_TENANTS = TargetRun._meta.get_field("tenant").related_model._meta.db_table
_CONNECTIONS = TargetRun._meta.get_field("connection").related_model._meta.db_table
# The arguments of the function that writes ``listed`` (migration 0014), in its order: what a page calls it with for
# a pending or running run, which keeps none.
_LISTED_ARGUMENTS = (
    *("schema_name", "database_type", "region", "phase", "status", "from_version", "to_version"),
    *("pending_versions", "applied_versions", "attempts", "lock_waits", "waiting", "retry_at", "skip_reason"),
    *("worker", "started_at", "completed_at", "duration_ms"),
)
_RENDERED_ROWS_SQL = (
    """SELECT r.id, r.phase, '{"id" : ' || r.id || ', "connection" : ' || to_json(c.name)"""  # noqa: S608
    f""" || ', "tenant" : ' || COALESCE(to_json((SELECT t.slug FROM "{_TENANTS}" t WHERE t.id = r.tenant_id))::text,"""
    """ 'null') || ', ' || COALESCE(r.listed, CASE WHEN r.error IS NULL THEN migrations_runner_target_run_listed("""
    + ", ".join(f"r.{name}" for name in _LISTED_ARGUMENTS)
    + ") END)"
    f""" FROM "{TargetRun._meta.db_table}" r JOIN "{_CONNECTIONS}" c ON c.id = r.connection_id WHERE r.id = ANY(%s)"""
)


def rows_rendered_here() -> bool:
    """Whether the control database renders the rows of the targets endpoint and of the executions' list
    (PostgreSQL, times shown in UTC)."""
    return db_connection.vendor == "postgresql" and timezone.get_current_timezone_name() == "UTC"


def execution_target_rows_rendered(runs: QuerySet[TargetRun], pks: list[int]) -> list[dict[str, Any]]:
    """The runs ``pks`` of ``runs`` as the targets endpoint shows them, in one query that PostgreSQL answers with
    each run's JSON (``rows_rendered_here()`` must hold): rows of ``id``, ``phase`` and ``RENDERED``,
    except a run with an error, whose row is ``values(*LISTED_ROW_FIELDS)`` (its error is redacted per caller)."""
    with db_connection.cursor() as cursor:
        cursor.execute(_RENDERED_ROWS_SQL, [pks])
        found = cursor.fetchall()
    rows: list[dict[str, Any]] = [
        {"id": pk, "phase": phase, RENDERED: text} for pk, phase, text in found if text is not None
    ]
    with_error = [pk for pk, _, text in found if text is None]
    if with_error:
        rows += runs.filter(pk__in=with_error).values(*LISTED_ROW_FIELDS)
    return rows


# A finished execution as the executions' list shows it (``ExecutionSerializer``'s fields in its order): ``listed``,
# which PostgreSQL keeps with the row (migration 0014), but its progress, which its counters give
# (``finished_progress``). An unfinished execution (its progress reads its runs) and one with an error (redacted per
# caller) have none: the serializer shows them. The query's text is constant; the keys are its parameter.
_COUNTERS = ("targets_total", "targets_succeeded", "targets_failed", "targets_skipped", "targets_cancelled")
_RENDERED_EXECUTIONS_SQL = (
    f"""SELECT id, listed, {", ".join(_COUNTERS)} FROM "{MigrationExecution._meta.db_table}" WHERE id = ANY(%s)"""  # noqa: S608
)
# Rows whose sum is the number of executions, kept by triggers on a PostgreSQL control database (migration 0014).
_EXECUTION_COUNT_SQL = "SELECT COALESCE(sum(n), 0) FROM migrations_runner_execution_count"


@dataclass(frozen=True, slots=True)
class RenderedExecution:
    """A finished execution with no error, as the executions' list shows it: ``text``, its JSON but the progress,
    rendered by PostgreSQL, and its progress."""

    pk: uuid.UUID
    text: str
    progress: Progress


def executions_rendered(*, pks: list[uuid.UUID]) -> list[MigrationExecution | RenderedExecution]:
    """The executions ``pks``, in that order, for the executions' list (``rows_rendered_here()`` must hold): a
    finished one with no error rendered (no model instance), the others whole but their metadata
    (``execution_list``)."""
    with db_connection.cursor() as cursor:
        cursor.execute(_RENDERED_EXECUTIONS_SQL, [pks])
        rows = cursor.fetchall()
    found: dict[uuid.UUID, MigrationExecution | RenderedExecution] = {}
    for pk, text, total, succeeded, failed, skipped, cancelled in rows:
        if text is not None:
            progress = finished_progress(
                total=total, succeeded=succeeded, failed=failed, skipped=skipped, cancelled=cancelled
            )
            found[pk] = RenderedExecution(pk=pk, text=text, progress=progress)
    whole = [pk for pk in pks if pk not in found]
    if whole:
        found.update((execution.pk, execution) for execution in execution_list().filter(pk__in=whole).order_by())
    return [found[pk] for pk in pks if pk in found]


def executions_count() -> int:
    """How many executions there are, what ``MigrationExecution.objects.count()`` says in this transaction: on a
    PostgreSQL control database read from the rows its triggers keep (nothing counted), else counted."""
    if db_connection.vendor != "postgresql":
        return MigrationExecution.objects.count()
    with db_connection.cursor() as cursor:
        cursor.execute(_EXECUTION_COUNT_SQL)
        return int(cursor.fetchone()[0])


def execution_target_rows(*, execution: MigrationExecution) -> QuerySet[TargetRun]:
    """The runs of an execution in phase order, joining nothing: a page reads its keys from it, then the rows of
    those keys as ``values(*LISTED_ROW_FIELDS)`` (the connection's name and the tenant's slug among them)."""
    return execution.targets.order_by("phase", "id")


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


_SUMMARY_FIELDS = (
    *("connection__name", "schema_name", "database_type", "region", "phase", "status", "from_version"),
    *("to_version", "pending_versions", "applied_versions", "error", "skip_reason", "worker"),
)


def execution_summary(*, execution: MigrationExecution) -> dict[str, Any]:
    """The JSON summary of an execution: status, progress and each target run."""
    # Rows, not model instances: an execution over a fleet has tens of thousands of runs.
    runs = execution.targets.order_by("phase", "id").values_list(*_SUMMARY_FIELDS)
    return {
        "id": str(execution.pk),
        "kind": execution.kind,
        "status": execution.status,
        "scope": execution.scope,
        "dry_run": execution.dry_run,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
        "progress": asdict(execution_progress(execution=execution)),
        "targets": [
            {
                "target": f"{connection}/{schema}",
                "database_type": database_type,
                "region": region,
                "phase": phase,
                "status": status,
                "from_version": from_version or None,
                "to_version": to_version or None,
                "pending": pending,
                "applied": [a["version"] or a["script"] for a in applied],
                "error": error,
                "skip_reason": skip_reason or None,
                "worker": worker or None,
            }
            for (
                connection,
                schema,
                database_type,
                region,
                phase,
                status,
                from_version,
                to_version,
                pending,
                applied,
                error,
                skip_reason,
                worker,
            ) in runs
        ],
    }


def _finished(execution: MigrationExecution) -> int:
    return (
        execution.targets_succeeded + execution.targets_failed + execution.targets_skipped + execution.targets_cancelled
    )


def execution_eta(*, execution: MigrationExecution) -> datetime | None:
    """When an unfinished execution should end, from the mean duration of its targets so far (counters only)."""
    remaining = execution.targets_total - _finished(execution)
    if execution.is_finished or not execution.runs_timed or remaining <= 0:
        return None
    mean_ms = execution.run_duration_ms / execution.runs_timed
    parallel = max(1, min(execution.batch_size, remaining))
    return timezone.now() + timedelta(milliseconds=mean_ms * remaining / parallel)


@dataclass(frozen=True, slots=True)
class RunningTargets:
    """The running target runs of an execution: their labels, and whether one of them holds a live lease."""

    labels: list[str]
    leased: bool


NOT_RUNNING = RunningTargets(labels=[], leased=False)


def executions_running(*, execution_ids: list[uuid.UUID]) -> dict[uuid.UUID, RunningTargets]:
    """The running targets of several executions, in one query: {execution id: RunningTargets} (executions with
    none left out)."""
    cutoff = timezone.now() - timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
    labels: dict[uuid.UUID, list[str]] = defaultdict(list)
    leased: set[uuid.UUID] = set()
    rows = TargetRun.objects.filter(execution_id__in=execution_ids, status=TargetStatus.RUNNING).values_list(
        "execution_id", "connection__name", "schema_name", "heartbeat_at"
    )
    for execution_id, name, schema, heartbeat in rows:
        labels[execution_id].append(f"{name}/{schema}")
        if heartbeat is not None and heartbeat >= cutoff:
            leased.add(execution_id)
    return {key: RunningTargets(labels=value, leased=key in leased) for key, value in labels.items()}


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an execution stands: counts per outcome, the targets running now, and why it waits, if it does."""

    total: int
    completed: int  # succeeded
    failed: int
    skipped: int
    cancelled: int
    running: int
    pending: int
    current_targets: list[str]  # labels of (at most 20 of) the running targets
    completion_percentage: float
    estimated_completion: datetime | None
    no_worker: bool  # it has work that no worker took up for MIGRATION_WORKER_WAIT seconds
    state: str  # finished, awaiting_approval, soaking, waiting_for_worker or running


def finished_progress(*, total: int, succeeded: int, failed: int, skipped: int, cancelled: int) -> Progress:
    """The progress of a finished execution, from its counters alone: nothing of it runs (it finishes only once
    no run of it runs), waits or remains to estimate."""
    finished = succeeded + failed + skipped + cancelled
    return Progress(
        total=total,
        completed=succeeded,
        failed=failed,
        skipped=skipped,
        cancelled=cancelled,
        running=0,
        pending=max(0, total - finished),
        current_targets=[],
        completion_percentage=_percentage(finished, total),
        estimated_completion=None,
        no_worker=False,
        state="finished",
    )


def _percentage(finished: int, total: int) -> float:
    return round(100.0 * finished / total, 1) if total else 100.0


def execution_progress(*, execution: MigrationExecution, running_targets: RunningTargets | None = None) -> Progress:
    """Totals (from the execution's counters), current targets, completion percentage, ETA, and whether the
    execution waits for a worker. Reads only the running target runs (or takes them from ``running_targets``)."""
    if execution.is_finished and (running_targets is None or not running_targets.labels):
        return finished_progress(
            total=execution.targets_total,
            succeeded=execution.targets_succeeded,
            failed=execution.targets_failed,
            skipped=execution.targets_skipped,
            cancelled=execution.targets_cancelled,
        )
    finished = _finished(execution)
    total = execution.targets_total
    if running_targets is None:
        running_targets = (
            NOT_RUNNING
            if execution.is_finished
            else executions_running(execution_ids=[execution.pk]).get(execution.pk, NOT_RUNNING)
        )
    labels = running_targets.labels
    running = len(labels)
    pending = max(0, total - finished - running)
    no_worker = execution_waiting_for_worker(
        execution=execution, running=running, pending=pending, leased=running_targets.leased
    )
    return Progress(
        total=total,
        completed=execution.targets_succeeded,
        failed=execution.targets_failed,
        skipped=execution.targets_skipped,
        cancelled=execution.targets_cancelled,
        running=running,
        pending=pending,
        current_targets=labels[:20],
        completion_percentage=_percentage(finished, total),
        estimated_completion=execution_eta(execution=execution),
        no_worker=no_worker,
        state=_progress_state(execution, no_worker),
    )


def _progress_state(execution: MigrationExecution, no_worker: bool) -> str:
    if execution.is_finished:
        return "finished"
    if execution.waiting == Waiting.APPROVAL:
        return "awaiting_approval"
    if execution.waiting == Waiting.SOAK:
        return "soaking"
    return "waiting_for_worker" if no_worker else "running"


@dataclass(frozen=True, slots=True)
class WaveState:
    """One canary wave of an execution: its size, its runs counted per status, its state and its gate's times."""

    wave: int
    size: int
    succeeded: int
    failed: int
    skipped: int
    cancelled: int
    running: int
    pending: int
    state: str  # pending, soaking, awaiting_approval, running, done, halted or skipped
    opened_at: str | None  # ISO 8601, as the execution's wave plan records it
    soak_until: str | None
    approved_by: str | None


def execution_waves(*, execution: MigrationExecution) -> list[WaveState]:
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
            WaveState(
                wave=wave["wave"],
                size=wave["size"],
                succeeded=by_status.get(TargetStatus.SUCCEEDED, 0),
                failed=by_status.get(TargetStatus.FAILED, 0),
                skipped=skipped,
                cancelled=by_status.get(TargetStatus.CANCELLED, 0),
                running=running,
                pending=pending,
                state=state,
                opened_at=wave.get("opened_at"),
                soak_until=wave.get("soak_until"),
                approved_by=wave.get("approved_by"),
            )
        )
    return result


def _next_wave_phase(execution: MigrationExecution) -> int | None:
    """The phase of the first wave not yet opened (the one a gate holds)."""
    return next((w["phase"] for w in execution.waves if "opened_at" not in w and w["wave"] > 1), None)


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
    recent = list(MigrationExecution.objects.order_by("-created_at")[:latest])
    unfinished = list(
        MigrationExecution.objects.filter(status__in=[ExecutionStatus.PENDING, ExecutionStatus.IN_PROGRESS])
    )
    running = executions_running_count(execution_ids=list({e.pk for e in recent + unfinished}))
    pending = {e.pk: max(0, e.targets_total - _finished(e) - running.get(e.pk, 0)) for e in unfinished}
    waiting = executions_waiting_for_worker(executions=unfinished, pending=pending)
    return ExecutionsOverview(latest=[(e, running.get(e.pk, 0)) for e in recent], waiting_for_worker=waiting)
