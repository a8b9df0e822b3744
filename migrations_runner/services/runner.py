"""The one runner of executions: lanes.

An execution is worked by up to ``batch_size`` lanes. A lane claims the next
pending target run of the execution's current phase with one conditional
statement (respecting the batch size and ``MIGRATION_MAX_PER_DATABASE`` across
all executions), applies it under a lease, records the outcome and claims the
next one in the same transaction, until the phase has nothing left. The last
lane out of a phase opens the next one (dependency skips), and the last lane
out of the last phase finishes the execution. A failure under ``halt`` skips
what is still pending; a cancel cancels it.

Lanes are hosted by django-q2 tasks (``QueueHost``: the default, any number of
``qcluster`` processes on any number of hosts share the lanes of an execution)
or by threads of the calling process (``ThreadHost``: ``--sync``, provisioning,
tests). Both run ``lane_work``; only spawning differs.

A lane that dies leaves its target run ``running`` with a lease that stops
being renewed; it is failed as lost ("worker lost", with what the target's
history shows it applied) by any lane that waits for a slot (the lost runs may
hold the slots it waits for) and by ``targets_recover_lost``, which also spawns
lanes again when an execution has work but no lane. A queued lane that waits
for a slot hands over to a successor task after ``MIGRATION_LANE_SECONDS``,
so it never keeps a worker (and the recovery task behind it) waiting for long.

A target whose database server cannot be reached before anything ran on it
goes back to pending, and the server is marked unreachable (in the shared
cache): lanes claim no target of that server until a probe reaches it again,
and fail its pending targets once it stayed unreachable for
``MIGRATION_FLEET_DB_WAIT`` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connections, transaction
from django.db import connection as control_db
from django.db.models import F, Min, Q, QuerySet
from django.utils import timezone
from psycopg import sql

from connections.services import connection_params
from migrations_runner import selectors
from migrations_runner.engine import apply as engine
from migrations_runner.engine import history
from migrations_runner.models import (
    ExecutionStatus,
    MigrationExecution,
    OnFailure,
    TargetRun,
    TargetStatus,
    Waiting,
)
from migrations_runner.selectors.workers import lane_waiting, lane_waiting_key
from migrations_runner.services.fingerprints import FingerprintBuffer
from migrations_runner.services.targets import apply_outcome, finish_execution, target_run_apply
from migrations_runner.services.waves import Size, budget_exceeded

logger = logging.getLogger(__name__)
T = TypeVar("T")

LANE_TASK = "migrations_runner.tasks.run_lane"
_CLAIM_LOCK = 0x1F0C  # PostgreSQL control database: claims are serialized so the caps hold exactly
CAP_WAIT_MAX_S = 1.0  # longest pause of a lane waiting for a database server under its cap
LANE_WAITING_S = 5.0  # how often a lane waiting for a slot or a server says so (a cache entry, not progress)
UNREACHABLE_KEY = "migrations:fleet-unreachable"  # {server: {"since": epoch seconds, "error": str}}
PROBE_TIMEOUT_S = 2
# A run given back this often fails instead: a server that answers probes but never this target's connection
# (a database that does not exist) must not keep it going round.
GIVE_BACKS_MAX = 3

CONTROL_RETRY_MAX_S = 5.0  # longest pause between attempts to reach the control database again

COUNTER_OF: dict[str, str] = {
    TargetStatus.SUCCEEDED: "targets_succeeded",
    TargetStatus.FAILED: "targets_failed",
    TargetStatus.SKIPPED: "targets_skipped",
    TargetStatus.CANCELLED: "targets_cancelled",
}
OUTCOME_FIELDS = [
    "status",
    "to_version",
    "applied_versions",
    "attempts",
    "error",
    "completed_at",
    "duration_ms",
    "lock_waits",
    "waiting",
]
# A claimed run given back: the fields its claim set, as they were (its outcome was never written); its
# attempts count the give-backs until a real outcome is recorded.
PENDING_FIELDS: dict[str, Any] = {
    "status": TargetStatus.PENDING,
    "worker": "",
    "started_at": None,
    "heartbeat_at": None,
    "attempts": F("attempts") + 1,
}


def worker_name() -> str:
    """The identity of this process in target runs: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _control(action: Callable[[], T]) -> T:
    """Run a control-database step, retrying while the control database is unreachable.

    A lane that has applied a target must not lose its outcome to a short outage of the control database
    (a restart, a fail-over): it reconnects and tries again, up to ``MIGRATION_CONTROL_DB_WAIT`` seconds.
    """
    deadline = time.monotonic() + settings.MIGRATION_CONTROL_DB_WAIT
    pause = 0.2
    while True:
        try:
            return action()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() >= deadline:
                raise
            logger.warning("control database unreachable; retrying", extra={"error": str(exc)[:200]})
            control_db.close()
            time.sleep(pause)
            pause = min(pause * 2, CONTROL_RETRY_MAX_S)


# --- hosts ------------------------------------------------------------------------------------------------------


class QueueHost:
    """Lanes as django-q2 tasks; a lane hands over to a successor task after ``MIGRATION_LANE_SECONDS``."""

    keeps_connections = True

    @property
    def lane_seconds(self) -> float | None:
        return settings.MIGRATION_LANE_SECONDS

    def spawn(self, execution_id, count: int) -> None:
        from django_q.tasks import async_task

        def enqueue() -> None:
            for _ in range(count):
                async_task(LANE_TASK, str(execution_id), task_name=f"lane-{execution_id}", group=str(execution_id))

        transaction.on_commit(enqueue)


class ThreadHost:
    """Lanes as threads of this process, up to ``batch_size`` at once; ``run`` returns when the execution ends."""

    keeps_connections = False
    lane_seconds = None

    def __init__(self, execution: MigrationExecution) -> None:
        self.execution = execution
        self._pool = ThreadPoolExecutor(max_workers=max(1, execution.batch_size), thread_name_prefix="lane")
        self._futures: list[Future] = []
        self._lock = threading.Lock()

    def spawn(self, execution_id, count: int) -> None:
        def submit() -> None:
            with self._lock:
                self._futures.extend(self._pool.submit(self._lane, execution_id) for _ in range(count))

        transaction.on_commit(submit)

    def _lane(self, execution_id) -> str:
        try:
            return lane_work(execution_id=execution_id, host=self)
        finally:
            control_db.close()

    def run(self, *, on_poll: Callable[[], None] | None = None, poll_s: float = 0.5) -> MigrationExecution:
        """Open the execution, work it in lanes until none is left, and return it finished."""
        try:
            execution_open(execution=self.execution, host=self)
            while True:
                with self._lock:
                    running = [f for f in self._futures if not f.done()]
                    for future in self._futures:
                        error = future.exception() if future.done() else None
                        if error is not None:
                            raise error
                if not running:
                    if self._soak(on_poll=on_poll, poll_s=poll_s):
                        continue  # the soak between two waves is over: the next wave's lanes run here
                    break
                wait(running, timeout=poll_s, return_when=FIRST_COMPLETED)
                if on_poll:
                    on_poll()
        finally:
            self._pool.shutdown(wait=True)
        self.execution.refresh_from_db()
        if not self.execution.is_finished:
            # Every lane exited while work is held by another process (per-server cap): report, do not hang.
            phase_advance(execution_id=self.execution.pk, host=self, continuing=False)
            self.execution.refresh_from_db()
        return self.execution

    def _soak(self, *, on_poll: Callable[[], None] | None, poll_s: float) -> bool:
        """Wait out a soak time between two waves, then open the next wave; True when its lanes were spawned.

        An execution that waits for approval returns from ``run`` unfinished: Continue starts its lanes again.
        """
        execution = MigrationExecution.objects.get(pk=self.execution.pk)
        if execution.waiting != Waiting.SOAK or execution.wait_until is None:
            return False
        while not execution.cancel_requested and timezone.now() < execution.wait_until:
            time.sleep(min(poll_s, max(0.0, (execution.wait_until - timezone.now()).total_seconds())))
            if on_poll:
                on_poll()
            execution.refresh_from_db(fields=["cancel_requested", "wait_until", "waiting", "status"])
            if execution.waiting != Waiting.SOAK or execution.is_finished:
                break
        before = len(self._futures)
        phase_advance(execution_id=execution.pk, host=self, continuing=False)
        with self._lock:
            return len(self._futures) > before


def execution_run(*, execution: MigrationExecution, on_poll: Callable[[], None] | None = None) -> MigrationExecution:
    """Run an execution's lanes as threads of this process and return it finished."""
    return ThreadHost(execution).run(on_poll=on_poll)


def execution_launch(*, execution: MigrationExecution) -> MigrationExecution:
    """Start a recorded execution on the queue's workers (lanes as tasks); returns at once."""
    execution_open(execution=execution, host=QueueHost())
    execution.refresh_from_db()
    return execution


# --- leases and cancel --------------------------------------------------------------------------------------------


class _Leases:
    """The target runs this process holds: one thread renews their leases and watches for cancel requests."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None
    _held: dict[int, object] = {}  # target run id -> execution id
    _cancelled: set[str] = set()

    @classmethod
    def hold(cls, run_id: int, execution_id) -> None:
        with cls._lock:
            cls._held[run_id] = execution_id
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._beat, name="lease-heartbeat", daemon=True)
                cls._thread.start()

    @classmethod
    def release(cls, run_id: int) -> None:
        with cls._lock:
            cls._held.pop(run_id, None)

    @classmethod
    def cancelled(cls, execution_id) -> bool:
        return str(execution_id) in cls._cancelled

    @classmethod
    def _beat(cls) -> None:
        while True:
            time.sleep(settings.MIGRATION_HEARTBEAT_SECONDS)
            with cls._lock:
                held = dict(cls._held)
            if not held:
                continue
            try:
                TargetRun.objects.filter(pk__in=list(held), status=TargetStatus.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
                cancelled = MigrationExecution.objects.filter(
                    pk__in=set(held.values()), cancel_requested=True
                ).values_list("pk", flat=True)
                cls._cancelled.update(str(pk) for pk in cancelled)
            except Exception:  # a missed beat is retried at the next one; the lease tolerates several
                logger.exception("lease heartbeat failed", extra={"target_runs": len(held)})
                connections.close_all()


def _should_stop(execution_id) -> Callable[[], bool]:
    return lambda: _Leases.cancelled(execution_id)


# --- claim and record ---------------------------------------------------------------------------------------------


def _table(model) -> str:
    return control_db.ops.quote_name(model._meta.db_table)


def _claim(execution: MigrationExecution, me: str, skip: list[str]) -> int | None:
    """Claim the next pending run of the execution's current phase within both caps and on none of the ``skip``
    servers: its id, or None when none can be. The caller's transaction holds the claim lock until it commits:
    keep what follows it short."""
    runs, executions = _table(TargetRun), _table(MigrationExecution)
    execution_key = MigrationExecution._meta.pk.get_db_prep_value(execution.pk, control_db)
    # As the ORM would store it (on SQLite a text whose form must match the ORM's later comparisons).
    now = control_db.ops.adapt_datetimefield_value(timezone.now())
    lock = " FOR UPDATE OF c SKIP LOCKED" if control_db.vendor == "postgresql" else ""
    unreachable = f"AND c.server NOT IN ({', '.join(['%s'] * len(skip))})" if skip else ""
    statement = f"""
        UPDATE {runs} SET status = %s, worker = %s, started_at = %s, heartbeat_at = %s
        WHERE id = (
            SELECT c.id FROM {runs} c
            WHERE c.execution_id = %s AND c.status = %s
              AND c.phase = (SELECT e.current_phase FROM {executions} e WHERE e.id = %s AND NOT e.cancel_requested)
              AND (SELECT count(*) FROM {runs} r WHERE r.execution_id = %s AND r.status = %s) < %s
              AND c.server NOT IN (
                  SELECT r.server FROM {runs} r WHERE r.status = %s GROUP BY r.server HAVING count(*) >= %s
              )
              AND (c.retry_at IS NULL OR c.retry_at <= %s)
              {unreachable}
            ORDER BY c.id LIMIT 1{lock}
        )
        RETURNING id
    """  # noqa: S608 (table names come from the models, values are parameters)
    params = [
        TargetStatus.RUNNING,
        me,
        now,
        now,
        execution_key,
        TargetStatus.PENDING,
        execution_key,
        execution_key,
        TargetStatus.RUNNING,
        execution.batch_size,
        TargetStatus.RUNNING,
        settings.MIGRATION_MAX_PER_DATABASE,
        now,
        *skip,
    ]
    with control_db.cursor() as cursor:
        if control_db.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CLAIM_LOCK])
        cursor.execute(statement, params)
        row = cursor.fetchone()
    return None if row is None else row[0]


def _claimed(run_id: int | None, execution: MigrationExecution) -> TargetRun | None:
    """The run a committed claim took (read after the claim's transaction, outside its lock), now under lease."""
    if run_id is None:
        return None
    # The password stays encrypted: a lane's connection source is made once per connection (``_source_for``).
    run = TargetRun.objects.select_related("connection", "tenant").defer("connection__password").get(pk=run_id)
    _Leases.hold(run.pk, execution.pk)
    return run


def _count(execution_id, status: str, n: int, **extra) -> None:
    """Add ``n`` to the execution's counter of ``status`` (and set ``extra`` fields) in one statement."""
    changes = {**extra}
    if n and status in COUNTER_OF:
        changes[COUNTER_OF[status]] = F(COUNTER_OF[status]) + n
    if changes:
        MigrationExecution.objects.filter(pk=execution_id).update(**changes)


def _close_pending(execution_id, status: str, reason: str) -> int:
    """End the pending runs of an execution with ``status`` and ``reason``; return how many."""
    pending = TargetRun.objects.filter(execution_id=execution_id, status=TargetStatus.PENDING)
    n = pending.update(status=status, skip_reason=reason, completed_at=timezone.now())
    _count(execution_id, status, n)
    return n


def _record(
    run: TargetRun, execution: MigrationExecution, me: str, *, give_back: str = "", retry_after_s: float = 0.0
) -> None:
    """Write a run's outcome and the execution's counters (one transaction, the caller's); a run given back goes
    to pending instead: ``unreachable`` (its database server was never reached) or ``deferred`` (a table lock
    was held: it may be claimed again at ``retry_at``, by any lane, while this one runs others)."""
    if give_back:
        deferred = _deferred_fields(run, retry_after_s) if give_back == "deferred" else {}
        fields = {**PENDING_FIELDS, **deferred}
        TargetRun.objects.filter(pk=run.pk, worker=me, status=TargetStatus.RUNNING).update(**fields)
        _Leases.release(run.pk)
        return
    recorded = TargetRun.objects.filter(pk=run.pk, worker=me, status=TargetStatus.RUNNING).update(
        **{name: getattr(run, name) for name in OUTCOME_FIELDS}
    )
    _Leases.release(run.pk)
    if not recorded:  # recovered as lost meanwhile: that record stands
        logger.warning("target run was recovered before its outcome was recorded", extra={"target_run": run.pk})
        return
    timing = {}
    if run.status == TargetStatus.SUCCEEDED and run.duration_ms is not None:
        timing = {"run_duration_ms": F("run_duration_ms") + run.duration_ms, "runs_timed": F("runs_timed") + 1}
    _count(execution.pk, run.status, 1, active_at=timezone.now(), **timing)
    if run.status == TargetStatus.FAILED:
        _after_failure(run, execution)


def _after_failure(run: TargetRun, execution: MigrationExecution) -> None:
    """A run failed: halt under ``on_failure=halt``, or when its wave's failures exceed the failure budget."""
    if execution.on_failure == OnFailure.HALT:
        _halt(run)
    elif run.wave and execution.waves:
        _check_budget(run, execution)


def _halt(run: TargetRun) -> None:
    """``on_failure=halt``: skip everything still pending, and say why on the execution."""
    _halt_with(run.execution_id, f"halted after {run.label} failed")


def _halt_with(execution_id, reason: str) -> None:
    _close_pending(execution_id, TargetStatus.SKIPPED, reason)
    MigrationExecution.objects.filter(pk=execution_id, error="").update(error=reason)


def _check_budget(run: TargetRun, execution: MigrationExecution) -> None:
    """Halt the execution when the failures of ``run``'s wave exceed the wave's failure budget."""
    size = next((w["size"] for w in execution.waves if w["wave"] == run.wave), 0)
    failed = TargetRun.objects.filter(execution_id=execution.pk, wave=run.wave, status=TargetStatus.FAILED)
    count = failed.count()
    budget = Size.parse(execution.failure_budget or "0", field_name="failure_budget")
    if not budget_exceeded(budget, failed=count, size=size):
        return
    shown = [f"{name}/{schema}" for name, schema in failed.values_list("connection__name", "schema_name")[:10]]
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    reason = (
        f"halted: wave {run.wave} exceeded its failure budget ({count} of {size} failed, budget {budget}): "
        f"{', '.join(shown)}{more}"
    )
    _halt_with(execution.pk, reason)
    logger.error(
        "wave failure budget exceeded",
        extra={"execution": str(execution.pk), "wave": run.wave, "failed": count, "size": size, "budget": str(budget)},
    )


# --- waves --------------------------------------------------------------------------------------------------------


def _wave_gate(execution: MigrationExecution, phase: int) -> str:
    """What opening ``phase`` waits for: ``Waiting.SOAK``, ``Waiting.APPROVAL`` or nothing (``""``).

    Called with the execution row locked. The soak of a wave starts when the gate is first reached (the wave
    before it is done); its end and each wave's opening are kept in ``execution.waves``.
    """
    wave = next((w for w in execution.waves if w["phase"] == phase), None)
    if wave is None:
        return Waiting.NOTHING
    now, changed = timezone.now(), []
    waiting, wait_until = Waiting.NOTHING, None
    if wave["wave"] > 1 and execution.wave_pause_s:
        if "soak_until" not in wave:
            wave["soak_until"] = (now + timedelta(seconds=execution.wave_pause_s)).isoformat()
            changed.append("waves")
        soak_until = datetime.fromisoformat(wave["soak_until"])
        if now < soak_until:
            waiting, wait_until = Waiting.SOAK, soak_until
    if not waiting and execution.wave_approval and wave["wave"] > execution.approved_wave:
        waiting = Waiting.APPROVAL
    if not waiting and "opened_at" not in wave:
        wave["opened_at"] = now.isoformat()
        changed.append("waves")
    if (execution.waiting, execution.wait_until) != (waiting, wait_until):
        if waiting:
            logger.info(
                "wave gate",
                extra={"execution": str(execution.pk), "wave": wave["wave"], "waiting": waiting},
            )
        execution.waiting, execution.wait_until = waiting, wait_until
        changed += ["waiting", "wait_until"]
    if changed:
        execution.save(update_fields=sorted(set(changed)))
    return waiting


# --- phases -------------------------------------------------------------------------------------------------------


def _skip_blocked(execution_id, phase: int) -> None:
    """Skip the phase's pending runs whose dependencies did not succeed."""
    pending = list(
        TargetRun.objects.filter(execution_id=execution_id, phase=phase, status=TargetStatus.PENDING).exclude(
            depends_on=[]
        )
    )
    dep_ids = {dep for run in pending for dep in run.depends_on}
    deps: dict[int, Mapping[str, Any]] = {
        row["id"]: row
        for row in TargetRun.objects.filter(pk__in=dep_ids).values("id", "status", "connection__name", "schema_name")
    }
    now, skipped = timezone.now(), []
    for run in pending:
        blocking = (deps[d] for d in run.depends_on if d in deps and deps[d]["status"] != TargetStatus.SUCCEEDED)
        bad = next(blocking, None)
        if bad is not None:
            run.status, run.completed_at = TargetStatus.SKIPPED, now
            run.skip_reason = f"dependency {bad['connection__name']}/{bad['schema_name']} {bad['status']}"
            skipped.append(run)
    TargetRun.objects.bulk_update(skipped, ["status", "completed_at", "skip_reason"], batch_size=500)
    _count(execution_id, TargetStatus.SKIPPED, len(skipped))


def execution_open(*, execution: MigrationExecution, host) -> None:
    """Mark an execution in progress and open its first phase (spawning its lanes), or finish it."""
    if execution.is_finished:
        return
    MigrationExecution.objects.filter(pk=execution.pk, status=ExecutionStatus.PENDING).update(
        status=ExecutionStatus.IN_PROGRESS, started_at=execution.started_at or timezone.now()
    )
    phase_advance(execution_id=execution.pk, host=host, continuing=False)


def phase_advance(*, execution_id, host, continuing: bool) -> bool:
    """Open the next phase when the current one is done, or finish the execution; True when there is work to claim.

    ``continuing`` is true when the caller is a lane that will go on claiming: it counts as one of the lanes.
    """
    with transaction.atomic():
        execution = MigrationExecution.objects.select_for_update().get(pk=execution_id)
        if execution.is_finished:
            return False
        runs = TargetRun.objects.filter(execution_id=execution_id)
        if execution.cancel_requested:
            _close_pending(execution_id, TargetStatus.CANCELLED, "execution cancelled")
        if runs.filter(status=TargetStatus.RUNNING).exists():
            return False  # a lane still at work will come back here when it is done
        opened = False
        while True:
            phase = runs.filter(status=TargetStatus.PENDING).aggregate(phase=Min("phase"))["phase"]
            if phase is None:
                execution.refresh_from_db()
                finish_execution(execution)
                return False
            if phase == execution.current_phase:
                break
            if _wave_gate(execution, phase):
                return False  # between two waves: a soak time or a person's Continue opens the next one
            _skip_blocked(execution_id, phase)
            execution.current_phase, opened = phase, True
            MigrationExecution.objects.filter(pk=execution_id).update(current_phase=phase)
        if not opened:
            return continuing  # another lane opened this phase (or a cap freed up in it): nothing to spawn
        pending = runs.filter(phase=phase, status=TargetStatus.PENDING).count()
        lanes = min(execution.batch_size, pending) - (1 if continuing else 0)
        MigrationExecution.objects.filter(pk=execution_id).update(active_at=timezone.now())
        if lanes > 0:
            host.spawn(execution_id, lanes)
        logger.info(
            "phase opened",
            extra={"execution": str(execution_id), "phase": phase, "pending": pending, "lanes": lanes + continuing},
        )
    return continuing


# --- the lane -----------------------------------------------------------------------------------------------------

_local = threading.local()


def _source_for(run: TargetRun) -> engine.ConnectionSource:
    """One connection per database per lane thread, reused by the targets it runs."""
    sources = _local.__dict__.setdefault("sources", {})
    key = (run.connection_id, run.connection.updated_at)
    if key not in sources:
        params = connection_params(run.connection)
        sources[key] = engine.ConnectionSource(lambda: psycopg.connect(**params.kwargs()))
    return sources[key]


def _fingerprints() -> FingerprintBuffer:
    """This lane thread's fingerprints, stored in batches (flushed when the lane leaves)."""
    return _local.__dict__.setdefault("fingerprints", FingerprintBuffer())


def _close_sources() -> None:
    """Close this thread's connections to the targets, after storing the fingerprints taken on them."""
    buffer = _local.__dict__.pop("fingerprints", None)
    if buffer is not None:
        buffer.flush()
    for source in _local.__dict__.pop("sources", {}).values():
        source.close()


def _deferred_fields(run: TargetRun, retry_after_s: float) -> dict[str, Any]:
    """What a run handed back after a lock wait keeps: its waits, since when, and when it may run again."""
    now = timezone.now()
    return {
        "lock_waits": run.lock_waits,
        "lock_blocked_since": run.lock_blocked_since or now,
        "waiting": run.waiting,
        "retry_at": now + timedelta(seconds=retry_after_s),
        "attempts": F("attempts"),  # a lock wait is not a give-back of an unreachable server
    }


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


def _apply(run: TargetRun, execution: MigrationExecution) -> tuple[str, float]:
    """Apply one claimed target run and put the outcome on it (not saved); never raises.

    Returns how the run is to be given back instead of recorded ('' when it is recorded), and after how many
    seconds it may be claimed again: ``unreachable`` when
    it failed to connect to its database server and ran nothing there (unless it was given back
    ``GIVE_BACKS_MAX`` times already), ``deferred`` when a table lock was held and other targets can run
    meanwhile.
    """
    given_back = run.attempts
    try:
        sets = selectors.sets_load(types={run.database_type})
        outcome = target_run_apply(
            run=run,
            execution=execution,
            sets=sets,
            source=_source_for(run),
            should_stop=_should_stop(execution.pk),
            defer_lock_wait=_others_claimable(run),
            on_lock_wait=_note_lock_wait(run),
        )
    except Exception as exc:  # a failure outside the engine must still end the target run, not leave it running
        logger.exception("target run crashed", extra={"target_run": run.pk, "target": run.label})
        outcome = engine.TargetOutcome(status="failed", error=engine.TargetError(kind="internal", message=str(exc)))
    if outcome.status == "deferred":
        run.lock_waits, run.waiting = outcome.lock_attempts, outcome.lock_wait
        return "deferred", outcome.retry_after_s or 0.0
    apply_outcome(run, outcome)
    if run.status == TargetStatus.SUCCEEDED and settings.MIGRATION_FINGERPRINT_AFTER_RUN:
        _fingerprints().add(run=run, source=_source_for(run))  # never raises
    kind = outcome.error.kind if outcome.error is not None else ""
    unreachable = outcome.status == "failed" and not outcome.reached and kind == "connection"
    return ("unreachable" if unreachable and given_back < GIVE_BACKS_MAX else ""), 0.0


def _wait_state(execution: MigrationExecution) -> str:
    """Why nothing could be claimed: ``advance`` (the phase is done or cancelled), ``full`` or ``capped``."""
    row = (
        MigrationExecution.objects.filter(pk=execution.pk).values("status", "cancel_requested", "current_phase").first()
    )
    if row is None or row["status"] not in (ExecutionStatus.PENDING, ExecutionStatus.IN_PROGRESS):
        return "done"
    runs = TargetRun.objects.filter(execution_id=execution.pk)
    if row["cancel_requested"] or not runs.filter(phase=row["current_phase"], status=TargetStatus.PENDING).exists():
        return "advance"
    if runs.filter(status=TargetStatus.RUNNING).count() >= execution.batch_size:
        return "full"  # enough lanes are at work; this one is surplus
    return "capped"  # a database server is at MIGRATION_MAX_PER_DATABASE (or unreachable): wait for a slot


# --- waiting: lanes and unreachable database servers -------------------------------------------------------------


def _say_waiting(execution_id) -> None:
    """Say (for ``MIGRATION_LEASE_SECONDS``) that a lane of the execution is alive and waits for a slot."""
    cache.set(lane_waiting_key(execution_id), time.time(), timeout=settings.MIGRATION_LEASE_SECONDS)


def _unreachable() -> dict[str, dict[str, Any]]:
    """The database servers marked unreachable: {server: {"since": epoch seconds, "error": message}}."""
    return cache.get(UNREACHABLE_KEY) or {}


def _store_unreachable(marks: dict[str, dict[str, Any]]) -> None:
    if marks:
        cache.set(UNREACHABLE_KEY, marks, timeout=settings.MIGRATION_FLEET_DB_WAIT + 300)
    else:
        cache.delete(UNREACHABLE_KEY)


def _mark_unreachable(run: TargetRun) -> None:
    """Lanes stop claiming the targets of ``run``'s server (which it could not reach) until a probe reaches it."""
    marks = _unreachable()
    if run.server in marks:
        return
    error = (run.error or {}).get("message", "")[:300]
    marks[run.server] = {"since": time.time(), "error": error}
    _store_unreachable(marks)
    logger.warning(
        "database server unreachable: its targets wait",
        extra={"server": run.server, "target": run.label, "wait_s": settings.MIGRATION_FLEET_DB_WAIT},
    )


def _reachable(run: TargetRun) -> bool:
    """One connection attempt to ``run``'s database, closed at once."""
    params = connection_params(run.connection)
    try:
        with psycopg.connect(**params.kwargs(connect_timeout=min(PROBE_TIMEOUT_S, params.connect_timeout))):
            return True
    except psycopg.Error:
        return False


def _wait_for_servers(execution: MigrationExecution) -> None:
    """For each unreachable server holding pending runs of the execution: probe it (and lift its mark when it
    answers), or fail those runs once it stayed unreachable for ``MIGRATION_FLEET_DB_WAIT`` seconds."""
    marks = _unreachable()
    if not marks:
        return
    pending = TargetRun.objects.filter(execution_id=execution.pk, status=TargetStatus.PENDING, server__in=list(marks))
    for server in set(pending.values_list("server", flat=True).distinct()):
        mark = marks[server]
        waited = time.time() - mark["since"]
        probe = pending.filter(server=server).select_related("connection").first()
        if probe is not None and _reachable(probe):
            _lift(server)
            logger.info("database server reachable again", extra={"server": server, "waited_s": round(waited)})
        elif waited >= settings.MIGRATION_FLEET_DB_WAIT:
            _fail_unreachable(execution, server, f"database server unreachable for {waited:.0f} s: {mark['error']}")
            _lift(server)  # the next execution's targets try it again (and wait again) rather than fail untried


def _lift(server: str) -> None:
    marks = _unreachable()
    if marks.pop(server, None) is not None:
        _store_unreachable(marks)


def _fail_unreachable(execution: MigrationExecution, server: str, message: str) -> None:
    """Fail the execution's pending runs on ``server`` with ``message`` (kind ``connection``)."""
    now = timezone.now()
    with transaction.atomic():
        runs = list(
            TargetRun.objects.select_related("connection", "execution").filter(
                execution_id=execution.pk, status=TargetStatus.PENDING, server=server
            )
        )
        failed = TargetRun.objects.filter(pk__in=[run.pk for run in runs], status=TargetStatus.PENDING).update(
            status=TargetStatus.FAILED, completed_at=now, error={"kind": "connection", "message": message}
        )
        if not failed:
            return
        _count(execution.pk, TargetStatus.FAILED, failed, active_at=now)
        for run in {run.wave: run for run in runs}.values():  # one per wave: its failure budget is checked once
            _after_failure(run, run.execution)
    logger.error(
        "targets failed: their database server stayed unreachable",
        extra={"execution": str(execution.pk), "server": server, "targets": failed},
    )


def _claim_id(execution: MigrationExecution, me: str) -> int | None:
    skip = list(_unreachable())
    with transaction.atomic():
        return _claim(execution, me, skip)


def _record_and_claim_id(
    run: TargetRun, execution: MigrationExecution, me: str, *, claim: bool, give_back: str, retry_after_s: float
) -> int | None:
    """Record ``run``'s outcome and claim the next run in one transaction; the id of the claimed run."""
    skip = list(_unreachable()) if claim else []
    with transaction.atomic():
        _record(run, execution, me, give_back=give_back, retry_after_s=retry_after_s)
        return _claim(execution, me, skip) if claim else None


def _claim_atomic(execution: MigrationExecution, me: str) -> TargetRun | None:
    """Claim the next run and read it, each step retried while the control database is unreachable."""
    run_id = _control(lambda: _claim_id(execution, me))
    return _control(lambda: _claimed(run_id, execution))


def _record_and_claim(
    run: TargetRun,
    execution: MigrationExecution,
    me: str,
    *,
    claim: bool,
    give_back: str = "",
    retry_after_s: float = 0.0,
) -> TargetRun | None:
    """Record and claim (one transaction, retried as a whole), then read the claimed run (retried alone)."""
    record = partial(
        _record_and_claim_id, run, execution, me, claim=claim, give_back=give_back, retry_after_s=retry_after_s
    )
    run_id = _control(record)
    return _control(lambda: _claimed(run_id, execution))


def lane_work(*, execution_id, host) -> str:
    """One lane: claim, apply and record target runs of the execution until its work is done; returns why it left."""
    me = worker_name()
    execution = _control(lambda: MigrationExecution.objects.get(pk=execution_id))
    deadline = time.monotonic() + host.lane_seconds if host.lane_seconds else None
    done, handed_over, run = 0, False, None
    try:
        run = _claim_atomic(execution, me)
        pause, said = 0.02, 0.0
        while True:
            if run is not None:
                if deadline is not None and not handed_over and time.monotonic() >= deadline:
                    # A queue task's time is bounded: a successor lane is queued now, while this one still works,
                    # so another cluster's idle worker can take it up before this cluster is free again.
                    _control(lambda: host.spawn(execution_id, 1))
                    handed_over = True
                give_back, retry_after_s = _apply(run, execution)
                if give_back == "unreachable":
                    _control(partial(_mark_unreachable, run))
                elif not give_back:
                    done += 1
                run = _record_and_claim(
                    run, execution, me, claim=not handed_over, give_back=give_back, retry_after_s=retry_after_s
                )
                if run is not None:
                    continue
                if handed_over:
                    if _control(lambda: _wait_state(execution)) == "advance":  # it may have ended the phase
                        _control(lambda: phase_advance(execution_id=execution_id, host=host, continuing=False))
                    return f"handed over after {done} target(s)"
            state = _control(lambda: _wait_state(execution))
            if state == "advance":
                if not _control(lambda: phase_advance(execution_id=execution_id, host=host, continuing=True)):
                    return f"done after {done} target(s)"
            elif state in ("done", "full"):
                return f"{state} after {done} target(s)"
            elif deadline is not None and time.monotonic() >= deadline:
                # Waiting is no work: the worker goes back to the queue (and to what waits there, the recovery
                # among it) and a successor lane queued behind it waits on.
                _control(lambda: host.spawn(execution_id, 1))
                return f"waited for a slot, handed over after {done} target(s)"
            else:
                # Waiting is not progress (``active_at`` stays): it only keeps recovery from spawning more lanes.
                if time.monotonic() - said >= LANE_WAITING_S:
                    said = time.monotonic()
                    _control(partial(_say_waiting, execution_id))
                time.sleep(pause)
                pause = min(pause * 2, CAP_WAIT_MAX_S)
                # The slots may be held by lost runs, or the work by an unreachable server: this lane sees to both,
                # so neither depends on a queue that waiting lanes can fill.
                _control(runs_fail_lost_if_any)
                _control(partial(_wait_for_servers, execution))
            run = _claim_atomic(execution, me)
            if run is not None:
                pause = 0.02
    except BaseException:
        # This lane dies (the control database stayed unreachable, or worse): its target's lease must stop being
        # renewed, so the recovery fails it as lost instead of it running forever.
        if run is not None:
            _Leases.release(run.pk)
        raise
    finally:
        if host.keeps_connections:
            _fingerprints().flush()
        else:
            _close_sources()  # stores the fingerprints first


# --- cancel and recovery ------------------------------------------------------------------------------------------


def execution_cancel_now(*, execution: MigrationExecution, actor: str, reason: str = "") -> None:
    """Cancel what has not started at once; runs at work stop between scripts; finish when nothing runs."""
    with transaction.atomic():
        MigrationExecution.objects.filter(pk=execution.pk).update(
            cancel_requested=True, error=reason or f"cancelled by {actor}", waiting=Waiting.NOTHING
        )
        _close_pending(execution.pk, TargetStatus.CANCELLED, "execution cancelled")
    phase_advance(execution_id=execution.pk, host=QueueHost(), continuing=False)


def _applied_under(run: TargetRun) -> list[dict]:
    """What the target's history shows this run's execution applied (a lost worker could not report it)."""
    params = connection_params(run.connection)
    query = sql.SQL(
        "SELECT version, script, execution_time_ms, type FROM {} "
        "WHERE execution_id = %s AND success AND type = 'SQL' ORDER BY installed_rank"
    ).format(history.table(run.schema_name))
    try:
        with psycopg.connect(**params.kwargs(autocommit=True, connect_timeout=min(5, params.connect_timeout))) as conn:
            rows = conn.execute(query, [run.execution_id]).fetchall()
    except psycopg.Error as exc:
        logger.warning(
            "could not read the history of a lost target run",
            extra={"target_run": run.pk, "target": run.label, "error": str(exc.sqlstate or "connection")},
        )
        return []
    return [{"version": v, "script": s, "duration_ms": ms, "kind": kind} for v, s, ms, kind in rows]


def _fail_lost(run: TargetRun, now: datetime) -> None:
    # A running run always has both: the claim sets them.
    assert run.heartbeat_at is not None
    assert run.started_at is not None
    applied = _applied_under(run)
    run.status, run.completed_at = TargetStatus.FAILED, now
    run.applied_versions = applied
    if applied:
        run.to_version = applied[-1]["version"]
    run.error = {
        "kind": "worker_lost",
        "message": f"worker lost: {run.worker} stopped renewing its lease at {run.heartbeat_at.isoformat()}",
    }
    run.duration_ms = int((now - run.started_at).total_seconds() * 1000)
    with transaction.atomic():
        if not TargetRun.objects.filter(pk=run.pk, status=TargetStatus.RUNNING, heartbeat_at=run.heartbeat_at).update(
            status=run.status,
            completed_at=now,
            applied_versions=run.applied_versions,
            to_version=run.to_version,
            error=run.error,
            duration_ms=run.duration_ms,
        ):
            return  # another lane or the recovery task failed it first (or its worker came back)
        _count(run.execution_id, TargetStatus.FAILED, 1)
        _after_failure(run, run.execution)
    logger.error(
        "target run lost its worker",
        extra={"target_run": run.pk, "target": run.label, "worker": run.worker, "applied": len(applied)},
    )


def _lost(now: datetime) -> QuerySet[TargetRun]:
    lease = timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
    return TargetRun.objects.filter(status=TargetStatus.RUNNING, heartbeat_at__lt=now - lease)


def runs_fail_lost() -> int:
    """Fail the running target runs whose lease expired (their worker is lost); returns how many were found."""
    now = timezone.now()
    lost = list(_lost(now).select_related("connection", "execution"))
    for run in lost:
        _fail_lost(run, now)
    return len(lost)


def runs_fail_lost_if_any() -> int:
    """``runs_fail_lost`` behind one cheap query, for lanes that look often."""
    return runs_fail_lost() if _lost(timezone.now()).exists() else 0


def targets_recover_lost() -> int:
    """The periodic check: fail runs whose lease expired, then restart executions that have work and no lane.

    Returns how many target runs were recovered.
    """
    recovered = runs_fail_lost()
    now = timezone.now()
    lease = timedelta(seconds=settings.MIGRATION_LEASE_SECONDS)
    host = QueueHost()
    for execution in MigrationExecution.objects.filter(status=ExecutionStatus.IN_PROGRESS):
        runs = TargetRun.objects.filter(execution_id=execution.pk)
        if runs.filter(status=TargetStatus.RUNNING).exists():
            continue
        stalled = execution.active_at is None or execution.active_at < now - lease
        has_work = runs.filter(phase=execution.current_phase, status=TargetStatus.PENDING).exists()
        if has_work and (not stalled or lane_waiting(execution_id=execution.pk)):
            continue
        if has_work:
            with transaction.atomic():
                pending = runs.filter(phase=execution.current_phase, status=TargetStatus.PENDING).count()
                MigrationExecution.objects.filter(pk=execution.pk).update(active_at=now)
                host.spawn(execution.pk, min(execution.batch_size, pending))
            logger.warning(
                "execution had work and no lane at work: lanes spawned again",
                extra={"execution": str(execution.pk), "phase": execution.current_phase},
            )
        else:
            phase_advance(execution_id=execution.pk, host=host, continuing=False)
    return recovered
