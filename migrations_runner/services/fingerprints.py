"""Recording schema fingerprints: after each successful target run, and by scans of the fleet.

A scan reads each database's schemas in chunks of ``SCAN_CHUNK`` (one connection, the history and one catalog
query per chunk), several chunks at once but at most ``MIGRATION_MAX_PER_DATABASE`` per database server. Scans
started from the API run in the background (a queue task, or here with ``MIGRATION_EXECUTOR=inline``), one at a
time, their progress kept on a ``FingerprintScan`` row.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as control_db
from django.db.models import Exists, OuterRef
from django.utils import timezone

from connections.models import DatabaseConnection
from connections.probe import ConnectionParams
from connections.services import connection_params
from infra_site.errors import ApplicationError
from migrations_runner import selectors
from migrations_runner.engine import fingerprint, history
from migrations_runner.engine.apply import ConnectionSource
from migrations_runner.engine.targets import Target
from migrations_runner.exceptions import FingerprintScanRunning
from migrations_runner.models import FingerprintScan, ScanState, SchemaFingerprint, SchemaShape, TargetRun
from migrations_runner.selection import TargetSelection

logger = logging.getLogger(__name__)

SCAN_CHUNK = 100  # schemas per connection and catalog query (25 to 1,000 measured alike; smaller spreads better)
SCAN_THREADS_MAX = 32
# Fingerprints a lane reads and stores at once (one catalog query, one control-database statement), or those it
# took in this long, whichever comes first. A batch's fixed costs dominate in a fleet run: each new schema resets
# every cached plan of the database's sessions, so the catalog query is planned again for nearly every batch.
# Measured (queued, 4 lanes, 2,000 one-statement targets, alternating runs): 50 a batch 3.93 s, 200 3.75 s.
RECORD_BATCH = 200
RECORD_SECONDS = 2.0
ORPHAN_SHAPE_AGE = timedelta(hours=1)  # a shape no target references any more is deleted by the next scan after this
SCAN_TASK = "migrations_runner.tasks.run_fingerprint_scan"
SCAN_PROGRESS_SECONDS = 0.5  # a running scan writes its progress at most this often


@dataclass(frozen=True)
class _Taken:
    """One target's fingerprint, as stored."""

    connection_id: str
    schema: str
    tenant_id: int | None
    database_type: str
    version: str
    fingerprint: str
    execution_id: uuid.UUID | None = None  # the run's execution; None for a scan


@dataclass
class ScanResult:
    """What a scan did: how many targets it fingerprinted, and the databases it could not read."""

    scanned: int = 0
    unreachable: list[dict] = field(default_factory=list)  # {"connection", "targets", "error"}
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"scanned": self.scanned, "unreachable": self.unreachable, "seconds": round(self.seconds, 3)}


def _store(taken: list[_Taken], shapes: dict[str, fingerprint.Objects], *, at: datetime) -> None:
    """Upsert the targets' fingerprints, adding the shapes not stored yet: on PostgreSQL one statement whatever the
    count (``_store_statement``), elsewhere a few."""
    if control_db.vendor == "postgresql":
        _store_at_once(taken, shapes, at=at)
        return
    with transaction.atomic():
        known = set(SchemaShape.objects.filter(pk__in=list(shapes)).values_list("pk", flat=True))
        SchemaShape.objects.bulk_create(
            [SchemaShape(fingerprint=h, definitions=objects) for h, objects in shapes.items() if h not in known],
            ignore_conflicts=True,
        )
        SchemaFingerprint.objects.bulk_create(
            [
                SchemaFingerprint(
                    connection_id=t.connection_id,
                    schema_name=t.schema,
                    tenant_id=t.tenant_id,
                    database_type=t.database_type,
                    version=t.version,
                    shape_id=t.fingerprint,
                    execution_id=t.execution_id,
                    taken_at=at,
                )
                for t in taken
            ],
            update_conflicts=True,
            unique_fields=["connection", "schema_name"],
            update_fields=["tenant", "database_type", "version", "shape", "execution", "taken_at"],
            batch_size=500,
        )


# The fingerprint columns the store sends, one array parameter each, in this order (``taken_at`` is one value).
_PRINT_FIELDS = ("connection", "schema_name", "tenant", "database_type", "version", "shape", "execution")
_statements: dict[str, str] = {}


def _store_statement() -> str:
    """One statement (its own transaction, unless the caller's is open) that adds the batch's new shapes and
    upserts its fingerprints, every column one array parameter (``unnest``), composed once per process from the
    models.

    The batch's shapes are sent whole: a lane's batch has one or a few, mostly stored already, which the insert
    passes by (``ON CONFLICT DO NOTHING``); the fingerprints' foreign keys (deferred, as Django makes them) are
    checked when the transaction commits, the shapes it added there by then. Through the ORM the same took three
    statements (the known shapes, the new ones, the upsert) and, in a lane's thread beside its targets, more of its
    CPU than reading the catalogs."""
    statement = _statements.get("store")
    if statement is None:
        quote = control_db.ops.quote_name
        prints = {f.name: f for f in SchemaFingerprint._meta.concrete_fields}
        shape = {f.name: quote(f.column or f.name) for f in SchemaShape._meta.concrete_fields}
        columns = [quote(prints[name].column or name) for name in _PRINT_FIELDS]
        casts = ", ".join(f"%s::{prints[name].db_type(control_db)}[]" for name in _PRINT_FIELDS)
        taken_at = quote(prints["taken_at"].column or "taken_at")
        updated = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*columns[2:], taken_at])
        key, definitions, created_at = shape["fingerprint"], shape["definitions"], shape["created_at"]
        statement = f"""
            WITH shapes AS (
                INSERT INTO {quote(SchemaShape._meta.db_table)} ({key}, {definitions}, {created_at})
                SELECT h, d::jsonb, %s FROM unnest(%s::text[], %s::text[]) AS s (h, d)
                ON CONFLICT ({key}) DO NOTHING
            )
            INSERT INTO {quote(SchemaFingerprint._meta.db_table)} ({", ".join(columns)}, {taken_at})
            SELECT *, %s FROM unnest({casts})
            ON CONFLICT ({columns[0]}, {columns[1]}) DO UPDATE SET {updated}
        """  # noqa: S608 (table and column names come from the models, values are parameters)
        _statements["store"] = statement
    return statement


def _store_at_once(taken: list[_Taken], shapes: dict[str, fingerprint.Objects], *, at: datetime) -> None:
    """``_store`` in one statement (``_store_statement``); a target listed twice keeps its last fingerprint."""
    last = {(t.connection_id, t.schema): t for t in taken}
    columns: list[list[Any]] = [[] for _ in _PRINT_FIELDS]
    for t in last.values():
        row = (t.connection_id, t.schema, t.tenant_id, t.database_type, t.version, t.fingerprint, t.execution_id)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    hashes = list(shapes)
    definitions = [json.dumps(shapes[h]) for h in hashes]
    with control_db.cursor() as cursor:
        cursor.execute(_store_statement(), [at, hashes, definitions, at, *columns])


class FingerprintBuffer:
    """The fingerprints a lane takes after its successful runs, in batches: once per ``size`` targets or
    ``seconds``, and when the lane leaves (``flush``), one catalog query per database (on the lane's own
    connections) reads the batch's schemas and one control-database transaction stores them. ``beside``: the
    batches are read and stored by that executor's thread instead, on connections of its own (``source_for``
    called in that thread), while the lane goes on. Nothing here raises: a failure is logged as a warning, so it
    can never fail a run."""

    def __init__(
        self,
        *,
        size: int = RECORD_BATCH,
        seconds: float = RECORD_SECONDS,
        beside: Executor | None = None,
        source_for: Callable[[TargetRun], ConnectionSource] | None = None,
    ) -> None:
        if (beside is None) != (source_for is None):
            raise ValueError("beside and source_for go together")
        self.size, self.seconds = size, seconds
        self._beside, self._source_for = beside, source_for
        self._runs: list[tuple[TargetRun, ConnectionSource | None]] = []
        self._since = time.monotonic()

    def add(self, *, run: TargetRun, source: ConnectionSource | None = None) -> None:
        """Fingerprint a succeeded target run's schema with the next batch (on ``source``, the run's connection,
        unless the batches are read ``beside``)."""
        if not self._runs:
            self._since = time.monotonic()
        self._runs.append((run, source))
        if len(self._runs) >= self.size or time.monotonic() - self._since >= self.seconds:
            self.flush()

    def flush(self) -> None:
        """Read and store the batch (or hand it to the executor beside)."""
        runs, self._runs = self._runs, []
        if not runs:
            return
        if self._beside is None:
            self._read_and_store([(run, source) for run, source in runs if source is not None])
            return
        source_for = self._source_for
        assert source_for is not None

        def beside() -> None:
            try:
                self._read_and_store([(run, source_for(run)) for run, _ in runs])
            except Exception as exc:
                self._warn(exc, targets=len(runs))

        self._beside.submit(beside)

    def _read_and_store(self, runs: list[tuple[TargetRun, ConnectionSource]]) -> None:
        by_source: dict[int, list[tuple[TargetRun, ConnectionSource]]] = defaultdict(list)
        for run, source in runs:
            by_source[id(source)].append((run, source))
        taken: list[_Taken] = []
        shapes: dict[str, fingerprint.Objects] = {}
        for group in by_source.values():
            source = group[0][1]
            try:
                prints = fingerprint.read_fingerprints(source.get(), [run.schema_name for run, _ in group])
            except Exception as exc:  # fingerprints are a report: the runs' outcomes stand whatever happens here
                run = group[0][0]
                self._warn(exc, targets=len(group), target_run=run.pk, schema=run.schema_name)
                continue
            for run, _ in group:
                found = prints[run.schema_name]
                shapes[found.hash] = found.objects
                taken.append(
                    _Taken(
                        connection_id=str(run.connection_id),
                        schema=run.schema_name,
                        tenant_id=run.tenant_id,
                        database_type=run.database_type,
                        version=run.to_version,
                        fingerprint=found.hash,
                        execution_id=run.execution_id,
                    )
                )
        if not taken:
            return
        try:
            _store(taken, shapes, at=timezone.now())
        except Exception as exc:
            self._warn(exc, targets=len(taken))

    @staticmethod
    def _warn(exc: Exception, **context: Any) -> None:
        logger.warning(
            "could not record the schema fingerprint of a target", extra={**context, "error": str(exc)[:300]}
        )


def fingerprint_record(*, run: TargetRun, source: ConnectionSource) -> None:
    """Record the fingerprint of a target run's schema at once (one catalog query on the run's own connection)."""
    buffer = FingerprintBuffer(size=1)
    buffer.add(run=run, source=source)


def _server(connection: DatabaseConnection) -> str:
    return f"{connection.host}:{connection.port}"


def _chunks(targets: list[Target], connections: dict[str, DatabaseConnection]) -> list[list[Target]]:
    """The targets in chunks of one database's schemas, interleaved by server so that no server waits its turn."""
    by_connection: dict[str, list[Target]] = defaultdict(list)
    for target in targets:
        by_connection[target.connection_id].append(target)
    by_server: dict[str, list[list[Target]]] = defaultdict(list)
    for connection_id, group in by_connection.items():
        for start in range(0, len(group), SCAN_CHUNK):
            by_server[_server(connections[connection_id])].append(group[start : start + SCAN_CHUNK])
    return [chunk for round_ in itertools.zip_longest(*by_server.values()) for chunk in round_ if chunk]


def _read_chunk(
    params: ConnectionParams, options: str, chunk: list[Target], gate: threading.Semaphore
) -> tuple[dict[str, history.SchemaState], dict[str, fingerprint.Fingerprint]] | str:
    """History and fingerprints of one chunk's schemas, or the error message when the database cannot be read."""
    schemas = [t.schema for t in chunk]
    with gate:
        try:
            with psycopg.connect(**params.kwargs(autocommit=True, options=options)) as conn:
                return history.read_states(conn, schemas), fingerprint.read_fingerprints(conn, schemas)
        except psycopg.Error as exc:
            return (exc.diag.message_primary or str(exc)).strip() or type(exc).__name__
        except Exception as exc:  # one database's surprise (a history it cannot parse) must not end the whole scan
            logger.exception("could not fingerprint a chunk of schemas", extra={"schemas": len(schemas)})
            return f"{type(exc).__name__}: {exc}"


def _delete_orphan_shapes() -> None:
    """Delete the shapes that no target references any more (and that are not brand new: a run may be adding one)."""
    SchemaShape.objects.filter(created_at__lt=timezone.now() - ORPHAN_SHAPE_AGE).exclude(
        Exists(SchemaFingerprint.objects.filter(shape=OuterRef("pk")))
    ).delete()


def fleet_fingerprint_scan(
    *,
    selection: TargetSelection | None = None,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[str, str], None] | None = None,
) -> ScanResult:
    """Fingerprint every target of ``selection`` (default: the whole fleet) now and record each; read-only on the
    fleet. ``on_start(total)`` is called with the number of targets, ``on_progress(label, status)`` for each
    target as its chunk ends (status ``scanned`` or ``unreachable``). Raises ``NoTargets`` when nothing matches."""
    started = time.perf_counter()
    targets = selectors.targets_resolve(selection or TargetSelection())
    if on_start:
        on_start(len(targets))
    connections = {str(c.pk): c for c in DatabaseConnection.objects.filter(pk__in={t.connection_id for t in targets})}
    cap = max(1, settings.MIGRATION_MAX_PER_DATABASE)
    gates = {_server(c): threading.BoundedSemaphore(cap) for c in connections.values()}
    options = f"-c default_transaction_read_only=on -c statement_timeout={int(settings.MIGRATION_TIMEOUT)}s"
    params: dict[str, ConnectionParams | str] = {}
    for connection_id, connection in connections.items():
        try:
            found = connection_params(connection)
            found.kwargs(autocommit=True, options=options)  # checks the host before anything is attempted
            params[connection_id] = found
        except psycopg.Error as exc:  # a host outside CONNECTION_ALLOWED_HOSTS: nothing is attempted
            params[connection_id] = str(exc)
    result = ScanResult()
    taken: list[_Taken] = []
    shapes: dict[str, fingerprint.Objects] = {}
    unreachable: dict[str, dict] = {}

    def done(chunk: list[Target], outcome: tuple | str) -> None:
        if isinstance(outcome, str):
            entry = unreachable.setdefault(
                chunk[0].connection_id, {"connection": chunk[0].connection_name, "targets": 0, "error": outcome}
            )
            entry["targets"] += len(chunk)
        else:
            states, prints = outcome
            for target in chunk:
                print_ = prints[target.schema]
                shapes.setdefault(print_.hash, print_.objects)
                current = states[target.schema].current
                taken.append(
                    _Taken(
                        connection_id=target.connection_id,
                        schema=target.schema,
                        tenant_id=target.tenant_id,
                        database_type=target.database_type,
                        version=str(current) if current else "",
                        fingerprint=print_.hash,
                    )
                )
        if on_progress:
            for target in chunk:
                on_progress(target.label, "unreachable" if isinstance(outcome, str) else "scanned")

    chunks = _chunks(targets, connections)
    readable: list[tuple[list[Target], ConnectionParams]] = []
    for chunk in chunks:
        where = params[chunk[0].connection_id]
        if isinstance(where, str):
            done(chunk, where)
        else:
            readable.append((chunk, where))
    with ThreadPoolExecutor(max_workers=max(1, min(len(readable), cap * len(gates), SCAN_THREADS_MAX))) as pool:
        futures = {
            pool.submit(_read_chunk, where, options, chunk, gates[_server(connections[chunk[0].connection_id])]): chunk
            for chunk, where in readable
        }
        for future in as_completed(futures):
            done(futures[future], future.result())
    _store(taken, shapes, at=timezone.now())
    _delete_orphan_shapes()
    result.scanned, result.unreachable = len(taken), list(unreachable.values())
    result.seconds = time.perf_counter() - started
    logger.info(
        "fleet fingerprint scan finished",
        extra={"scanned": result.scanned, "unreachable": len(result.unreachable), "seconds": round(result.seconds, 3)},
    )
    return result


def _scan_lost_after() -> timedelta:
    """How long a running scan may show no progress before it counts as lost: a chunk's two catalog statements
    are each bounded by ``MIGRATION_TIMEOUT``, so a longer silence means its worker stopped."""
    return timedelta(seconds=2 * settings.MIGRATION_TIMEOUT + 60)


def _scan_update(scan_id: uuid.UUID, **changes: Any) -> bool:
    """Write a running scan's progress or end; False when it is no longer running (declared lost meanwhile)."""
    return bool(FingerprintScan.objects.filter(pk=scan_id, state=ScanState.RUNNING).update(**changes))


def fingerprint_scan_start(*, selection: TargetSelection, started_by: str) -> FingerprintScan:
    """Record a scan of ``selection`` and start it in the background; return it (finished already when
    ``MIGRATION_EXECUTOR`` is inline). ``NoTargets`` (400) when nothing matches, ``FingerprintScanRunning``
    (409, naming it) while another scan runs: one at a time, whatever their selections, as each reads the fleet."""
    total = len(selectors.targets_resolve(selection))
    now = timezone.now()
    FingerprintScan.objects.filter(state=ScanState.RUNNING, active_at__lt=now - _scan_lost_after()).update(
        state=ScanState.FAILED, error="lost: its worker stopped showing progress", finished_at=now
    )
    try:
        with transaction.atomic():
            scan = FingerprintScan.objects.create(
                scope=selection.scope,
                filters=selection.as_filters(),
                total=total,
                started_by=started_by[:150],
                started_at=now,
                active_at=now,
            )
    except IntegrityError as exc:
        running = FingerprintScan.objects.filter(state=ScanState.RUNNING).first()
        details = {"scan": str(running.pk), "started_at": running.started_at.isoformat()} if running else {}
        raise FingerprintScanRunning(
            "A fingerprint scan is running; start another once it has finished.", details=details
        ) from exc
    logger.info("fleet fingerprint scan started", extra={"scan": str(scan.pk), "targets": total, "actor": started_by})
    if settings.MIGRATION_EXECUTOR == "inline":
        transaction.on_commit(lambda: fingerprint_scan_run(scan_id=scan.pk))
    else:
        from django_q.tasks import async_task

        transaction.on_commit(lambda: async_task(SCAN_TASK, str(scan.pk), task_name=f"fingerprint-scan-{scan.pk}"))
    scan.refresh_from_db()
    return scan


def fingerprint_scan_run(*, scan_id: uuid.UUID | str) -> str:
    """Run a recorded scan, writing its progress as it goes; return the state it ended in."""
    scan = FingerprintScan.objects.get(pk=scan_id)
    if scan.state != ScanState.RUNNING:
        return scan.state
    done = 0
    written = time.monotonic()

    def on_start(total: int) -> None:
        _scan_update(scan.pk, total=total, active_at=timezone.now())

    def on_progress(label: str, status: str) -> None:
        nonlocal done, written
        done += 1
        if time.monotonic() - written >= SCAN_PROGRESS_SECONDS:
            written = time.monotonic()
            _scan_update(scan.pk, done=done, active_at=timezone.now())

    try:
        result = fleet_fingerprint_scan(selection=scan.selection, on_start=on_start, on_progress=on_progress)
    except Exception as exc:  # the scan's row says how it ended, whatever ended it
        if not isinstance(exc, ApplicationError):
            logger.exception("fleet fingerprint scan failed", extra={"scan": str(scan.pk)})
        message = exc.message if isinstance(exc, ApplicationError) else f"{type(exc).__name__}: {exc}"
        now = timezone.now()
        _scan_update(scan.pk, state=ScanState.FAILED, done=done, error=message[:2000], active_at=now, finished_at=now)
        return ScanState.FAILED
    now = timezone.now()
    _scan_update(
        scan.pk,
        state=ScanState.COMPLETED,
        done=done,
        scanned=result.scanned,
        unreachable=result.unreachable,
        active_at=now,
        finished_at=now,
    )
    return ScanState.COMPLETED
