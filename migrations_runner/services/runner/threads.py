"""Lanes as threads of this process (``ThreadHost``: ``--sync``, provisioning, tests): ``execution_run``.

Both hosts run ``lane_work``; only spawning differs. This one also waits for the execution to end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from django.db import connection as control_db
from django.db import transaction
from django.utils import timezone

from infra_site.connection_pool import room_for
from migrations_runner.models import MigrationExecution, Waiting
from migrations_runner.services.runner.hosts import ExecutionId
from migrations_runner.services.runner.lanes import lane_work
from migrations_runner.services.runner.phases import execution_open, phase_advance

# Control-database connections a lane thread holds while it works: its own, its control thread's (claims ahead,
# outcomes) and its fingerprint thread's.
CONNECTIONS_PER_LANE = 3


class ThreadHost:
    """Lanes as threads of this process, up to ``batch_size`` at once; ``run`` returns when the execution ends.
    The process's pool of control-database connections has room for them meanwhile (``room_for``)."""

    keeps_connections = False
    lane_seconds: float | None = None

    def __init__(self, execution: MigrationExecution) -> None:
        self.execution = execution
        self._pool = ThreadPoolExecutor(max_workers=max(1, execution.batch_size), thread_name_prefix="lane")
        self._futures: list[Future[str]] = []
        self._lock = threading.Lock()

    def spawn(self, execution_id: ExecutionId, count: int) -> None:
        def submit() -> None:
            with self._lock:
                self._futures.extend(self._pool.submit(self._lane, execution_id) for _ in range(count))

        transaction.on_commit(submit)

    def _lane(self, execution_id: ExecutionId) -> str:
        try:
            return lane_work(execution_id=execution_id, host=self)
        finally:
            control_db.close()

    def run(self, *, on_poll: Callable[[], None] | None = None, poll_s: float = 0.5) -> MigrationExecution:
        """Open the execution, work it in lanes until none is left, and return it finished."""
        # The lanes' connections and the lease heartbeat's: that thread is the process's, started by a first lane.
        with room_for(CONNECTIONS_PER_LANE * max(1, self.execution.batch_size) + 1):
            return self._run(on_poll=on_poll, poll_s=poll_s)

    def _run(self, *, on_poll: Callable[[], None] | None, poll_s: float) -> MigrationExecution:
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
