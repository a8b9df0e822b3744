"""Leases: this process renews the leases of the target runs it holds and watches their executions' cancel."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import ClassVar

from django.conf import settings
from django.db import connections
from django.db.models import Q
from django.utils import timezone

from migrations_runner.models import MigrationExecution, TargetRun, TargetStatus
from migrations_runner.services.runner.hosts import ExecutionId

logger = logging.getLogger(__name__)


def worker_name() -> str:
    """The identity of this process in target runs: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Leases:
    """The target runs this process holds: one thread renews their leases and watches for cancel requests."""

    _lock = threading.Lock()
    _thread: ClassVar[threading.Thread | None] = None
    _held: ClassVar[dict[int, ExecutionId]] = {}  # target run id -> execution id
    _cancelled: ClassVar[set[str]] = set()

    @classmethod
    def hold(cls, *, run_id: int, execution_id: ExecutionId) -> None:
        """Renew ``run_id``'s lease from now on (starting the heartbeat thread if none runs)."""
        with cls._lock:
            cls._held[run_id] = execution_id
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._beat, name="lease-heartbeat", daemon=True)
                cls._thread.start()

    @classmethod
    def release(cls, *, run_id: int) -> None:
        """Stop renewing ``run_id``'s lease."""
        with cls._lock:
            cls._held.pop(run_id, None)

    @classmethod
    def cancelled(cls, *, execution_id: ExecutionId) -> bool:
        """Whether the heartbeat saw a cancel request of the execution of a run this process holds."""
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
                # A run claimed ahead (pending, still this lane's) keeps its lease too.
                TargetRun.objects.filter(pk__in=list(held)).filter(
                    Q(status=TargetStatus.RUNNING) | Q(status=TargetStatus.PENDING) & ~Q(worker="")
                ).update(heartbeat_at=timezone.now())
                cancelled = MigrationExecution.objects.filter(
                    pk__in=set(held.values()), cancel_requested=True
                ).values_list("pk", flat=True)
                cls._cancelled.update(str(pk) for pk in cancelled)
            except Exception:  # a missed beat is retried at the next one; the lease tolerates several
                logger.exception("lease heartbeat failed", extra={"target_runs": len(held)})
                connections.close_all()
