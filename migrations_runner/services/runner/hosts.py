"""What hosts an execution's lanes: the ``LaneHost`` protocol, and lanes as django-q2 tasks (``QueueHost``).

The other host, threads of this process, is ``threads.ThreadHost``: it runs ``lane_work`` itself, so it sits
above the lanes, while this module sits below them.
"""

from __future__ import annotations

import uuid
from typing import Protocol, TypeAlias

from django.conf import settings
from django.db import transaction
from django_q.tasks import async_task

ExecutionId: TypeAlias = uuid.UUID

LANE_TASK = "migrations_runner.tasks.run_lane"


class LaneHost(Protocol):
    """What the lanes and the phases need from the thing that runs lanes."""

    @property
    def keeps_connections(self) -> bool:
        """Whether a lane's target connections outlive it (a worker process runs many lanes)."""
        ...

    @property
    def lane_seconds(self) -> float | None:
        """How long a lane works before it hands over to a successor; None: until the work is done."""
        ...

    def spawn(self, execution_id: ExecutionId, count: int) -> None:
        """Start ``count`` more lanes of the execution once the caller's transaction commits."""
        ...


class QueueHost:
    """Lanes as django-q2 tasks; a lane hands over to a successor task after ``MIGRATION_LANE_SECONDS``."""

    keeps_connections = True

    @property
    def lane_seconds(self) -> float | None:
        return settings.MIGRATION_LANE_SECONDS

    def spawn(self, execution_id: ExecutionId, count: int) -> None:
        def enqueue() -> None:
            for _ in range(count):
                async_task(LANE_TASK, str(execution_id), task_name=f"lane-{execution_id}", group=str(execution_id))

        transaction.on_commit(enqueue)
