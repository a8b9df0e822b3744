"""Applying one claimed target run in a lane: its connection source, lock waits, deferral and fingerprints.

A lane thread keeps one connection per target database (reused by the targets it runs) and a buffer of the
fingerprints taken after successful runs; both are closed or stored when the lane leaves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import F, Q
from django.utils import timezone

from connections.services import connection_params
from migrations_runner import selectors
from migrations_runner.engine import apply as engine
from migrations_runner.engine.sets import MigrationSet
from migrations_runner.models import MigrationExecution, TargetRun, TargetStatus
from migrations_runner.services.fingerprints import FingerprintBuffer
from migrations_runner.services.runner.hosts import ExecutionId
from migrations_runner.services.runner.leases import Leases
from migrations_runner.services.targets import apply_outcome, target_run_apply

logger = logging.getLogger(__name__)

# A run given back this often fails instead: a server that answers probes but never this target's connection
# (a database that does not exist) must not keep it going round.
GIVE_BACKS_MAX = 3
SETS_RECHECK_S = 1.0  # how stale a lane's view of the migration files on disk may be

_local = threading.local()


def _source_for(run: TargetRun) -> engine.ConnectionSource:
    """One connection per database per lane thread, reused by the targets it runs."""
    sources = _local.__dict__.setdefault("sources", {})
    key = (run.connection_id, run.connection.updated_at)
    if key not in sources:
        params = connection_params(run.connection)
        sources[key] = engine.ConnectionSource(lambda: psycopg.connect(**params.kwargs()))
    return sources[key]


def lane_sets_fresh() -> None:
    """A lane starts: its first target sees the migration files as they are now."""
    _local.sets_checked_at = None


def _sets(run: TargetRun) -> dict[str, MigrationSet]:
    """The migration sets for a lane's target: the files are checked when the lane starts and then every
    ``SETS_RECHECK_S``, not for each target; each target still compares its set with the execution's snapshot,
    so a set changed on disk fails the targets claimed after the next check."""
    now = time.monotonic()
    checked = _local.__dict__.get("sets_checked_at")
    check = checked is None or now - checked >= SETS_RECHECK_S
    sets = selectors.sets_load(types={run.database_type}, check_files=check)
    if check:
        _local.sets_checked_at = now
    return sets


def _fingerprints() -> FingerprintBuffer:
    """This lane thread's fingerprints, stored in batches (flushed when the lane leaves)."""
    return _local.__dict__.setdefault("fingerprints", FingerprintBuffer())


def lane_fingerprints_flush() -> None:
    """Store the fingerprints this lane thread has taken so far (its connections stay open)."""
    _fingerprints().flush()


def lane_fingerprints_beside(executor: Executor) -> None:
    """From now on this lane thread's fingerprints are read and stored by ``executor``'s thread, on connections of
    that thread (``lane_connections_close`` run there closes them), while the lane goes on with its targets."""
    _local.fingerprints = FingerprintBuffer(beside=executor, source_for=_source_for)


def lane_fingerprints_detach() -> None:
    """Hand the fingerprints this lane thread has buffered to where they go, and read the next ones here again."""
    buffer = _local.__dict__.pop("fingerprints", None)
    if buffer is not None:
        buffer.flush()


def lane_connections_close() -> None:
    """Close this thread's connections to the targets, after storing the fingerprints taken on them."""
    buffer = _local.__dict__.pop("fingerprints", None)
    if buffer is not None:
        buffer.flush()
    for source in _local.__dict__.pop("sources", {}).values():
        source.close()


def _should_stop(execution_id: ExecutionId) -> Callable[[], bool]:
    return lambda: Leases.cancelled(execution_id=execution_id)


def _others_claimable(run: TargetRun) -> Callable[[], bool]:
    """Whether the run's execution has other pending runs that a lane could take now (asked after a lock wait)."""

    def ask() -> bool:
        try:
            now = timezone.now()
            others = TargetRun.objects.filter(execution_id=run.execution_id, status=TargetStatus.PENDING).exclude(
                pk=run.pk
            )
            return others.filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now)).exists()
        except (InterfaceError, OperationalError):
            return False  # the control database is away: wait here, as before

    return ask


def _note_lock_wait(run: TargetRun) -> Callable[[str], None]:
    """Show a lock wait on the run while it goes on (never raises)."""

    def note(message: str) -> None:
        run.waiting = message
        try:
            TargetRun.objects.filter(pk=run.pk).update(lock_waits=F("lock_waits") + 1, waiting=message)
        except (InterfaceError, OperationalError):
            logger.warning("could not record a lock wait", extra={"target_run": run.pk, "waiting": message})

    return note


class _Confirmation:
    """Whether a run claimed ahead started (``started``, asked once: the recording of the run before it, in
    flight on the lane's control thread), kept with what that raised for the lane to raise in turn."""

    def __init__(self, started: Callable[[], bool]) -> None:
        self._started = started
        self.answer: bool | None = None
        self.failure: BaseException | None = None

    def __call__(self) -> bool:
        if self.answer is None:
            try:
                self.answer = bool(self._started())
            except BaseException as exc:  # raised again by the lane once the target is left as it was
                self.failure, self.answer = exc, False
        return self.answer


def claimed_run_apply(
    *, run: TargetRun, execution: MigrationExecution, started: Callable[[], bool] | None = None
) -> tuple[str, float]:
    """Apply one claimed target run and put the outcome on it (not saved); never raises but what ``started``
    raised.

    Returns how the run is to be given back instead of recorded ('' when it is recorded), and after how many
    seconds it may be claimed again: ``unreachable`` when
    it failed to connect to its database server and ran nothing there (unless it was given back
    ``GIVE_BACKS_MAX`` times already), ``deferred`` when a table lock was held and other targets can run
    meanwhile, ``unconfirmed`` when ``started`` said the run did not start: nothing was written on its
    target and it has no outcome to record.

    ``started``: the run was claimed ahead and the transaction that starts it is still in flight; the target's
    lock is taken and its history read meanwhile, and nothing is written there until ``started`` (which may wait
    for that transaction) says the run started.
    """
    given_back = run.attempts
    confirmation = _Confirmation(started) if started is not None else None
    try:
        sets = _sets(run)
        outcome = target_run_apply(
            run=run,
            execution=execution,
            sets=sets,
            source=_source_for(run),
            should_stop=_should_stop(execution.pk),
            defer_lock_wait=_others_claimable(run),
            on_lock_wait=_note_lock_wait(run),
            may_write=confirmation or (lambda: True),
        )
    except Exception as exc:  # a failure outside the engine must still end the target run, not leave it running
        logger.exception("target run crashed", extra={"target_run": run.pk, "target": run.label})
        outcome = engine.TargetOutcome(status="failed", error=engine.TargetError(kind="internal", message=str(exc)))
    if confirmation is not None and not confirmation():  # asked here when the engine never came to ask
        if confirmation.failure is not None:
            raise confirmation.failure
        return "unconfirmed", 0.0
    if outcome.status == "deferred":
        run.lock_waits, run.waiting = outcome.lock_attempts, outcome.lock_wait
        return "deferred", outcome.retry_after_s or 0.0
    apply_outcome(run, outcome)
    if run.status == TargetStatus.SUCCEEDED and settings.MIGRATION_FINGERPRINT_AFTER_RUN:
        _fingerprints().add(run=run, source=_source_for(run))  # never raises
    kind = outcome.error.kind if outcome.error is not None else ""
    unreachable = outcome.status == "failed" and not outcome.reached and kind == "connection"
    return ("unreachable" if unreachable and given_back < GIVE_BACKS_MAX else ""), 0.0
