"""A lane's work beside its targets: claiming the next target ahead, and reading and storing fingerprints.

While a lane applies a target, a thread of its own claims the next one and records the one before (the
transaction that starts the target in its place: the lane reads the target meanwhile and writes there only once
that transaction says it started), and another reads and stores the fingerprints of the targets it finished (on
connections of its own, in batches: ``FingerprintBuffer``).

The claim (the statement that counts both caps under the claim lock) is the costly part of a lane's
control-database work: a lane whose targets are quick (its last one took less than
``MIGRATION_CLAIM_AHEAD_BELOW_S``) claims its next target ahead, beside the target work; several at once when
they are quicker still (as many as its last target's time fits in ``AHEAD_WINDOW_S``, at most ``AHEAD_MAX``), so
that other lanes never wait on more than that window of its work. A run claimed ahead is
reserved, not started: it stays ``pending`` with the lane's ``worker`` and a lease, other lanes' claims pass it
by, and it counts in no cap. It must be a run of the same execution on the same database server as the run at
work: the lane starts it in place of that run, in the transaction that records that run's outcome, so neither
cap's count changes. When the run is no longer the lane's by then (cancelled, skipped by a halt, or given back
by the recovery after its lease ran out) nothing starts and the lane claims as usual. A run claimed ahead after
an outcome that is not recorded at once (a failure, which may halt the execution; a target given back) is given
back in the transaction that records that outcome, with the other runs the lane still holds ahead.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.db import connections

from migrations_runner.models import MigrationExecution, TargetRun
from migrations_runner.services.runner.apply import lane_connections_close
from migrations_runner.services.runner.claims import run_claim_ahead, run_unclaim
from migrations_runner.services.runner.leases import Leases

logger = logging.getLogger(__name__)

AHEAD_WINDOW_S = 0.05  # a lane holds ahead about this much of its execution's work (by its last target's time)
AHEAD_MAX = 8


class LaneControl:
    """The threads that claim a lane's next runs (one claim at a time) and record its fingerprints while the lane
    applies its targets."""

    def __init__(self, *, execution: MigrationExecution, worker: str) -> None:
        self.execution = execution
        self.worker = worker
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: Future[list[TargetRun]] | None = None
        self._held: deque[TargetRun] = deque()  # claimed ahead, in the order to apply them
        self._fingerprints: ThreadPoolExecutor | None = None

    def fingerprints_beside(self) -> ThreadPoolExecutor:
        """The executor of this lane's fingerprint batches (its thread starts with the first batch)."""
        if self._fingerprints is None:
            self._fingerprints = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lane-fingerprints")
        return self._fingerprints

    @staticmethod
    def quick(seconds: float) -> bool:
        """Whether a target that took ``seconds`` is quick enough for its lane to claim ahead."""
        return seconds < settings.MIGRATION_CLAIM_AHEAD_BELOW_S

    def _control_thread(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lane-control")
        return self._pool

    def claim_ahead(self, *, current: TargetRun, seconds: float) -> None:
        """Claim the runs to apply after ``current`` while the lane applies it, as many as fit in ``AHEAD_WINDOW_S``
        at ``seconds`` a target (at least one), unless the lane still holds some or a claim is in flight."""
        if self._in_flight is not None or self._held:
            return
        count = max(1, min(AHEAD_MAX, int(AHEAD_WINDOW_S / max(seconds, 1e-3))))
        self._in_flight = self._control_thread().submit(
            run_claim_ahead, execution=self.execution, worker=self.worker, current=current, count=count
        )

    def record_beside(self, record: Callable[[], bool]) -> Future[bool]:
        """Run ``record`` (the recording of a run's outcome that starts the run claimed ahead in its place) on the
        control thread, after what was handed to it before, while the lane goes on with the run it starts."""
        return self._control_thread().submit(record)

    def _settle(self) -> None:
        """Wait for the claim in flight and hold what it claimed; a claim that failed (the control database stayed
        away) raises here."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            self._held.extend(future.result())

    def take(self) -> TargetRun | None:
        """The next run claimed ahead, once its claim is done (None when none was asked for or none could be
        claimed)."""
        self._settle()
        return self._held.popleft() if self._held else None

    def drain(self) -> list[TargetRun]:
        """The runs still held ahead, which the lane will not start: for it to give back (or, dying, to stop
        renewing)."""
        self._settle()
        held, self._held = list(self._held), deque()
        return held

    def close(self, *, failed: bool) -> None:
        """The lane leaves: wait for the claim in flight, give back what it claimed, let the fingerprint batches
        handed over be stored, and close the threads' connections. ``failed``: the lane dies, so a run claimed
        ahead only stops being renewed (the recovery gives it back when its lease runs out)."""
        try:
            self._close_claims(failed=failed)
        finally:
            if self._fingerprints is not None:
                self._fingerprints.submit(lane_connections_close).result()
                self._fingerprints.submit(connections.close_all).result()
                self._fingerprints.shutdown(wait=True)
                self._fingerprints = None

    def _close_claims(self, *, failed: bool) -> None:
        if self._pool is None:
            return
        try:
            try:
                held = self.drain()
            except Exception:
                if not failed:
                    raise
                logger.exception("a lane's claim ahead failed as the lane died")
                held = list(self._held)
            if failed:
                for run in held:
                    Leases.release(run_id=run.pk)
            elif held:
                self._pool.submit(run_unclaim, runs=held, worker=self.worker).result()
        finally:
            self._pool.submit(connections.close_all).result()
            self._pool.shutdown(wait=True)
            self._pool = None
