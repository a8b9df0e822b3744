"""Fixtures of the browser tests: the small fleet, queue settings, and a real qcluster that runs what the console
submits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.migrations_runner.conftest import sets_dir, small_fleet  # noqa: F401
from tests.qcluster import Cluster, control_env


@pytest.fixture
def queue_settings(settings):
    """Executions go to the queue, with short leases and heartbeats (the live server shares these settings)."""
    settings.MIGRATION_EXECUTOR = "queue"
    settings.MIGRATION_MAX_PER_DATABASE = 50
    settings.MIGRATION_LEASE_SECONDS = 6
    settings.MIGRATION_HEARTBEAT_SECONDS = 1
    return settings


@pytest.fixture
def cluster(queue_settings, sets_dir) -> Iterator[Cluster]:  # noqa: F811
    """One ``manage.py qcluster`` with two workers on this test's control database and migration sets."""
    started = Cluster(control_env(), workers=2).start()
    yield started
    started.stop()
