"""The lane: claim, apply and record target runs of an execution until its work is done; launching and cancel.

A lane that waits for a slot fails the lost runs that may hold it, probes unreachable servers, and (a queued
lane) hands over to a successor task after ``MIGRATION_LANE_SECONDS``, so it never keeps a worker (and the
recovery task behind it) waiting for long.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future

from django.conf import settings
from django.db import transaction

from migrations_runner.models import ExecutionStatus, MigrationExecution, TargetRun, TargetStatus, Waiting
from migrations_runner.services.runner.ahead import LaneControl
from migrations_runner.services.runner.apply import (
    claimed_run_apply,
    lane_connections_close,
    lane_fingerprints_beside,
    lane_fingerprints_detach,
    lane_fingerprints_flush,
    lane_sets_fresh,
)
from migrations_runner.services.runner.claims import (
    run_claim,
    run_record_and_claim,
    run_record_and_start,
    run_unclaim,
)
from migrations_runner.services.runner.control import control_retry
from migrations_runner.services.runner.counters import runs_close_pending
from migrations_runner.services.runner.hosts import ExecutionId, LaneHost, QueueHost
from migrations_runner.services.runner.leases import Leases, worker_name
from migrations_runner.services.runner.phases import execution_open, phase_advance
from migrations_runner.services.runner.reachability import (
    lane_marks_forget,
    server_mark_unreachable,
    servers_wait_for,
)
from migrations_runner.services.runner.recovery import runs_fail_lost_if_any
from migrations_runner.services.runner.signals import lane_waiting_say

CAP_WAIT_MAX_S = 1.0  # longest pause of a lane waiting for a database server under its cap
LANE_WAITING_S = 5.0  # how often a lane waiting for a slot or a server says so (a cache entry, not progress)

# Steps that other callers (hosts, cancel, recovery) run once, without retrying: a lane retries them.
_phase_advance = control_retry(phase_advance)
_runs_fail_lost_if_any = control_retry(runs_fail_lost_if_any)
_say_waiting_retried = control_retry(lane_waiting_say)


@control_retry
def _execution_of(execution_id: ExecutionId) -> MigrationExecution:
    return MigrationExecution.objects.get(pk=execution_id)


@control_retry
def _successor_spawn(host: LaneHost, execution_id: ExecutionId) -> None:
    host.spawn(execution_id, 1)


@control_retry
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


def lane_work(*, execution_id: ExecutionId, host: LaneHost) -> str:
    """One lane: claim, apply and record target runs of the execution until its work is done; returns why it left.

    While targets are quick, the next run is claimed beside the target work (``ahead``) and starts in the
    transaction that records the current one's outcome. That transaction goes to the lane's control thread while
    the lane takes the next target's lock and reads its history; the target's first write waits for its answer."""
    me = worker_name()
    lane_sets_fresh()
    lane_marks_forget()
    execution = _execution_of(execution_id)
    control = LaneControl(execution=execution, worker=me)
    if settings.MIGRATION_FINGERPRINT_AFTER_RUN:
        lane_fingerprints_beside(control.fingerprints_beside())
    lane_seconds = host.lane_seconds
    deadline = time.monotonic() + lane_seconds if lane_seconds else None
    done, handed_over, quick, failed, took = 0, False, False, False, 0.0
    run: TargetRun | None = None
    ahead: TargetRun | None = None  # the run claimed ahead of ``run``, until it starts or is given back
    recording: TargetRun | None = None  # the run before ``run``, while the transaction that records it is in flight
    starting: Future[bool] | None = None  # that transaction, which starts ``run`` in its place
    try:
        run = run_claim(execution=execution, worker=me)
        pause, said = 0.02, 0.0
        while True:
            if run is not None:
                if deadline is not None and not handed_over and time.monotonic() >= deadline:
                    # A queue task's time is bounded: a successor lane is queued now, while this one still works,
                    # so another cluster's idle worker can take it up before this cluster is free again.
                    _successor_spawn(host, execution_id)
                    handed_over = True
                if quick and not handed_over:
                    control.claim_ahead(current=run, seconds=took)
                started = time.monotonic()
                give_back, retry_after_s = claimed_run_apply(
                    run=run, execution=execution, started=starting.result if starting is not None else None
                )
                recording = starting = None
                took = time.monotonic() - started
                quick = control.quick(took)
                if give_back == "unreachable":
                    server_mark_unreachable(run=run)
                elif not give_back:
                    done += 1
                ahead = control.take() if give_back != "unconfirmed" else None
                if ahead is not None and not give_back and run.status != TargetStatus.FAILED:
                    # The run claimed ahead starts in this one's place, in the transaction that records this one,
                    # on the control thread: the lane goes on with it meanwhile (its target's lock and history),
                    # and writes nothing there before that transaction says it started (it may have been
                    # cancelled meanwhile, or this run recovered).
                    recording, run, ahead = run, ahead, None
                    record = functools.partial(
                        run_record_and_start, run=recording, start=run, execution=execution, worker=me
                    )
                    starting = control.record_beside(record)
                    continue
                if give_back == "unconfirmed":
                    # It did not start: those still pending (it among them, when the run before it was recovered
                    # meanwhile) go back.
                    run_unclaim(runs=[run, *control.drain()], worker=me)
                    run = run_claim(execution=execution, worker=me) if not handed_over else None
                else:
                    run = run_record_and_claim(
                        run=run,
                        execution=execution,
                        worker=me,
                        claim=not handed_over,
                        give_back=give_back,
                        retry_after_s=retry_after_s,
                        release=[*([ahead] if ahead is not None else []), *control.drain()],
                    )
                    ahead = None
                if run is not None:
                    continue
                if handed_over:
                    if _wait_state(execution) == "advance":  # it may have ended the phase
                        _phase_advance(execution_id=execution_id, host=host, continuing=False)
                    return f"handed over after {done} target(s)"
            state = _wait_state(execution)
            if state == "advance":
                if not _phase_advance(execution_id=execution_id, host=host, continuing=True):
                    return f"done after {done} target(s)"
            elif state in ("done", "full"):
                return f"{state} after {done} target(s)"
            elif deadline is not None and time.monotonic() >= deadline:
                # Waiting is no work: the worker goes back to the queue (and to what waits there, the recovery
                # among it) and a successor lane queued behind it waits on.
                _successor_spawn(host, execution_id)
                return f"waited for a slot, handed over after {done} target(s)"
            else:
                # Waiting is not progress (``active_at`` stays): it only keeps recovery from spawning more lanes.
                if time.monotonic() - said >= LANE_WAITING_S:
                    said = time.monotonic()
                    _say_waiting_retried(execution_id)
                time.sleep(pause)
                pause = min(pause * 2, CAP_WAIT_MAX_S)
                # The slots may be held by lost runs, or the work by an unreachable server: this lane sees to both,
                # so neither depends on a queue that waiting lanes can fill.
                _runs_fail_lost_if_any()
                servers_wait_for(execution=execution)
            run = run_claim(execution=execution, worker=me)
            if run is not None:
                pause = 0.02
    except BaseException:
        # This lane dies (the control database stayed unreachable, or worse): its targets' leases must stop being
        # renewed, so the recovery fails them as lost instead of them running forever.
        failed = True
        for held in (recording, run, ahead):
            if held is not None:
                Leases.release(run_id=held.pk)
        raise
    finally:
        try:
            lane_fingerprints_detach()  # what is buffered goes to the thread beside, which the close waits for
            control.close(failed=failed)
        finally:
            if host.keeps_connections:
                lane_fingerprints_flush()
            else:
                lane_connections_close()  # stores the fingerprints first


def execution_launch(*, execution: MigrationExecution) -> MigrationExecution:
    """Start a recorded execution on the queue's workers (lanes as tasks); returns it at once, refreshed."""
    execution_open(execution=execution, host=QueueHost())
    execution.refresh_from_db()
    return execution


def execution_cancel_now(*, execution: MigrationExecution, actor: str, reason: str = "") -> None:
    """Cancel what has not started at once; runs at work stop between scripts; finish when nothing runs."""
    with transaction.atomic():
        MigrationExecution.objects.filter(pk=execution.pk).update(
            cancel_requested=True, error=reason or f"cancelled by {actor}", waiting=Waiting.NOTHING
        )
        runs_close_pending(execution_id=execution.pk, status=TargetStatus.CANCELLED, reason="execution cancelled")
    phase_advance(execution_id=execution.pk, host=QueueHost(), continuing=False)
