"""The write side of the worker signals: a lane says it is alive while it waits for a slot or a server (read by
``selectors.workers``)."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

from migrations_runner.selectors.workers import lane_waiting_key
from migrations_runner.services.runner.hosts import ExecutionId


def lane_waiting_say(execution_id: ExecutionId) -> None:
    """Say (for ``MIGRATION_LEASE_SECONDS``) that a lane of the execution is alive and waits for a slot."""
    cache.set(lane_waiting_key(execution_id), time.time(), timeout=settings.MIGRATION_LEASE_SECONDS)
