"""django-q2 tasks. Each takes ids, and calls one service."""

from __future__ import annotations

import uuid

from migrations_runner import services


def run_lane(execution_id: str) -> str:
    """Work one lane of an execution: claim, apply and record its target runs (a worker's unit of work)."""
    return services.lane_work(execution_id=uuid.UUID(execution_id), host=services.QueueHost())


def recover_lost_targets() -> int:
    """Fail target runs whose worker stopped renewing its lease (a periodic schedule)."""
    return services.targets_recover_lost()


def fire_schedule(schedule_id: int) -> str:
    """Start the execution of a migration schedule (called by its django-q2 schedule)."""
    return services.schedule_fire(schedule_id=schedule_id)


def run_fingerprint_scan(scan_id: str) -> str:
    """Run a recorded fingerprint scan of the fleet (started from the API)."""
    return services.fingerprint_scan_run(scan_id=scan_id)
