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
_RENDERED_ROW = (
    """'{"id" : ' || r.id || ', "connection" : ' || to_json(c.name)"""  # noqa: S608
    f""" || ', "tenant" : ' || COALESCE(to_json((SELECT t.slug FROM "{_TENANTS}" t WHERE t.id = r.tenant_id))::text,"""
    """ 'null') || ', ' || COALESCE(r.listed, CASE WHEN r.error IS NULL THEN migrations_runner_target_run_listed("""
    + ", ".join(f"r.{name}" for name in _LISTED_ARGUMENTS)
    + ") END)"
)
_RUNS = TargetRun._meta.db_table
_RENDERED_ROWS_SQL = (
    f'SELECT r.id, r.phase, {_RENDERED_ROW} FROM "{_RUNS}" r JOIN "{_CONNECTIONS}" c ON c.id = r.connection_id'  # noqa: S608
    " WHERE r.id = ANY(%s)"
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


def _page_keys(status: str | None, cursor: Cursor) -> str:
    """The SQL of a page's keys ``(id, phase)`` on the ``cursor`` side of its key, as ``keyset_rows`` reads them:
    the rest of the cursor's phase, then the following phases, each a plain range of the index ``target_run_page``
    (parameters ``execution``, ``status``, ``phase``, ``id`` and ``limit``)."""
    order = "phase, id" if cursor.forward else "phase DESC, id DESC"
    op = ">" if cursor.forward else "<"
    runs = f'SELECT id, phase FROM "{_RUNS}" WHERE execution_id = %(execution)s'  # noqa: S608
    if status is not None:
        runs += " AND status = %(status)s"
    if cursor.key is None:
        return f"{runs} ORDER BY {order} LIMIT %(limit)s"
    return (
        f"SELECT id, phase FROM (({runs} AND phase = %(phase)s AND id {op} %(id)s ORDER BY {order}"  # noqa: S608
        " LIMIT %(limit)s)"
        f" UNION ALL ({runs} AND phase {op} %(phase)s ORDER BY {order} LIMIT %(limit)s)) k"
        f" ORDER BY {order} LIMIT %(limit)s"
    )


def _target_page_query(
    execution_id: uuid.UUID, status: str | None, cursor: Cursor, limit: int
) -> tuple[str, dict[str, Any]]:
    """The statement of ``execution_target_page_rendered`` and its parameters."""
    count = "e.targets_total"
    if status is not None:
        count = f'(SELECT count(*) FROM "{_RUNS}" WHERE execution_id = e.id AND status = %(status)s)'  # noqa: S608
    statement = (
        f"WITH keys AS ({_page_keys(status, cursor)}) SELECT {count}, r.id, r.phase, {_RENDERED_ROW}"  # noqa: S608
        f' FROM "{MigrationExecution._meta.db_table}" e LEFT JOIN (keys JOIN "{_RUNS}" r ON r.id = keys.id'
        f' JOIN "{_CONNECTIONS}" c ON c.id = r.connection_id) ON true WHERE e.id = %(execution)s'
        " ORDER BY r.phase, r.id"
    )
    phase, run = cursor.key if cursor.key is not None else (None, None)
    return statement, {"execution": execution_id, "status": status, "phase": phase, "id": run, "limit": limit}


def execution_target_page_rendered(
    *, execution_id: uuid.UUID | str, status: str | None, cursor: Cursor, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` runs of an execution on the ``cursor`` side of its key (``keyset_rows``; with ``status``,
    only those), in ``(phase, id)`` order, as ``execution_target_rows_rendered`` gives them, and the number of its
    runs (with that status): one statement, as fast at the last page as at the first (``rows_rendered_here()``
    must hold). Raise ``ExecutionNotFound``."""
    try:
        key = uuid.UUID(str(execution_id))
    except ValueError as exc:
        raise ExecutionNotFound(f"No execution with id {execution_id}.", details={"id": str(execution_id)}) from exc
    with db_connection.cursor() as db_cursor:
        db_cursor.execute(*_target_page_query(key, status, cursor, limit))
        found = db_cursor.fetchall()
    if not found:
        raise ExecutionNotFound(f"No execution with id {execution_id}.", details={"id": str(execution_id)})
    rows: list[dict[str, Any]] = [
        {"id": pk, "phase": phase, RENDERED: text} for _, pk, phase, text in found if pk is not None
    ]
    with_error = {pk for _, pk, _, text in found if pk is not None and text is None}
    if with_error:
        shown = {row["id"]: row for row in TargetRun.objects.filter(pk__in=with_error).values(*LISTED_ROW_FIELDS)}
        # (a run deleted meanwhile is left out, as a page read a moment later would)
        rows = [
            shown[row["id"]] if row["id"] in with_error else row
            for row in rows
            if row["id"] not in with_error or row["id"] in shown
        ]
    return rows, found[0][0]


# An execution as the executions' list shows it (``ExecutionSerializer``'s fields in its order) but its progress:
# ``listed``, which PostgreSQL keeps with a finished row (migration 0014), or the same function's text for an
# unfinished one; its progress comes from its counters (``finished_progress``), and for an unfinished one from its
# running targets too, read in the same query. An execution with an error has none: the serializer shows it,
# redacted per caller. The query's text is made of constants and the models' table names; its parameters are
# the lease's cutoff and the keys.
_COUNTERS = ("targets_total", "targets_succeeded", "targets_failed", "targets_skipped", "targets_cancelled")
# What ``execution_progress`` reads of an execution (its counters among them), in the model's order of fields: the
# values of a model instance with its other fields unread (``Model.from_db``).
_PROGRESS_READS = {*_COUNTERS, "id", "status", "waiting", "runs_timed", "run_duration_ms", "batch_size"}
_PROGRESS_READS |= {"active_at", "started_at", "created_at"}
_PROGRESS_FIELDS = tuple(f.attname for f in MigrationExecution._meta.concrete_fields if f.attname in _PROGRESS_READS)
_LISTED_EXECUTION_ARGUMENTS = (
    *("id", "kind", "purpose", "scope", "filters", "dry_run", "status", "on_failure", "batch_size", "executed_by"),
    *("origin", "parent_id", "cancel_requested", "error", "created_at", "started_at", "completed_at"),
    *("failure_budget", "wave_pause_s", "wave_approval", "waiting"),
)
_UNFINISHED = (ExecutionStatus.PENDING, ExecutionStatus.IN_PROGRESS)
_IS_UNFINISHED = f"e.status IN ('{_UNFINISHED[0].value}', '{_UNFINISHED[1].value}')"
# An unfinished execution's times (a finished one's progress does not read them: each costs a conversion).
_PROGRESS_COLUMNS = ", ".join(
    f"CASE WHEN {_IS_UNFINISHED} THEN e.{name} END" if name.endswith("_at") else f"e.{name}"
    for name in _PROGRESS_FIELDS
)
_LISTED_EXECUTION = f"migrations_runner_execution_listed({', '.join(f'e.{n}' for n in _LISTED_EXECUTION_ARGUMENTS)})"
_RUNNING_TARGETS = (
    "SELECT array_agg(c.name || '/' || r.schema_name ORDER BY r.id) AS labels,"  # noqa: S608
    " bool_or(r.heartbeat_at >= %s) AS leased"
    f' FROM "{_RUNS}" r JOIN "{_CONNECTIONS}" c ON c.id = r.connection_id'
    f" WHERE r.execution_id = e.id AND r.status = '{TargetStatus.RUNNING.value}' AND {_IS_UNFINISHED}"
)
_RENDERED_EXECUTIONS_SQL = (
    f"SELECT COALESCE(e.listed, CASE WHEN e.error = '' THEN {_LISTED_EXECUTION} END),"  # noqa: S608
    f" {_PROGRESS_COLUMNS}, running.labels, running.leased"
    f' FROM "{MigrationExecution._meta.db_table}" e LEFT JOIN LATERAL ({_RUNNING_TARGETS}) running ON true'
    " WHERE e.id = ANY(%s)"
)
# Rows whose sum is the number of executions, kept by triggers on a PostgreSQL control database (migration 0014).
_EXECUTION_COUNT_SQL = "SELECT COALESCE(sum(n), 0) FROM migrations_runner_execution_count"


@dataclass(frozen=True, slots=True)
class RenderedExecution:
    """An execution with no error, as the executions' list shows it: ``text``, its JSON but the progress,
    rendered by PostgreSQL, and its progress."""

    pk: uuid.UUID
    text: str
    progress: Progress


def executions_rendered(*, pks: list[uuid.UUID]) -> list[MigrationExecution | RenderedExecution]:
    """The executions ``pks``, in that order, for the executions' list (``rows_rendered_here()`` must hold), in
    one query with the running targets of the unfinished ones: one with no error rendered (no model instance), one
    with an error whole but its metadata (``execution_list``), for the serializer."""
    cutoff = timezone.now() - timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
    with db_connection.cursor() as cursor:
        cursor.execute(_RENDERED_EXECUTIONS_SQL, [cutoff, pks])
        rows = cursor.fetchall()
    found: dict[uuid.UUID, MigrationExecution | RenderedExecution] = {}
    for text, *values, labels, leased in rows:
        if text is None:
            continue
        named = dict(zip(_PROGRESS_FIELDS, values, strict=True))
        if named["status"] in _UNFINISHED:
            # A model instance of what its progress reads, its other fields unread.
            execution = MigrationExecution.from_db(db_connection.alias, _PROGRESS_FIELDS, values)
            running = RunningTargets(labels=labels, leased=bool(leased)) if labels else NOT_RUNNING
            progress = execution_progress(execution=execution, running_targets=running)
        else:
            progress = finished_progress(
                total=named["targets_total"],
                succeeded=named["targets_succeeded"],
                failed=named["targets_failed"],
                skipped=named["targets_skipped"],
                cancelled=named["targets_cancelled"],
            )
        found[named["id"]] = RenderedExecution(pk=named["id"], text=text, progress=progress)
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
    rows = (
        TargetRun.objects.filter(execution_id__in=execution_ids, status=TargetStatus.RUNNING)
        .order_by("id")
        .values_list("execution_id", "connection__name", "schema_name", "heartbeat_at")
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
