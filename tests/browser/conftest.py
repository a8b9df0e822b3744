"""Fixtures of the browser tests: a real qcluster that runs what the console submits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.qcluster import Cluster, control_env


@pytest.fixture
def cluster(queue_settings, sets_dir) -> Iterator[Cluster]:
    """One ``manage.py qcluster`` with two workers on this test's control database and migration sets."""
    started = Cluster(control_env(), workers=2).start()
    yield started
    started.stop()
