"""Fixtures of the migrations tests: registry rows with nothing behind them, the queue without a worker, and
real qcluster processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from connections import services as registry
from connections.models import DatabaseConnection
from tests.support.qcluster import Cluster, control_env


@pytest.fixture
def registered(db, settings) -> dict[str, DatabaseConnection]:
    """Registry rows only (nothing to connect to), beside any fleet's: listed-eu (eu-west) with tenant acme,
    listed-us (us-east)."""
    settings.CONNECTION_ALLOWED_HOSTS = ["127.0.0.1"]
    connections = {
        name: registry.connection_create(
            actor="test",
            verify=False,
            name=name,
            database_type="shared",
            region=region,
            host="127.0.0.1",
            port=5432,
            database_name=name.replace("-", "_"),
            username="nobody",
            password="unused",
            ssl_mode="disable",
        )
        for name, region in (("listed-eu", "eu-west"), ("listed-us", "us-east"))
    }
    registry.tenant_create(slug="acme", name="Acme", connection=connections["listed-eu"], actor="test")
    return connections


@pytest.fixture
def launch_held(monkeypatch):
    """``execution_start`` records executions without launching them: a test acts between planning and running
    (two plans before either runs, sets changed after planning), then runs each with ``execution_run``."""
    from migrations_runner.services import executions

    monkeypatch.setattr(executions, "_launch", lambda execution, **kwargs: execution)


@pytest.fixture
def queue_here(settings):
    """Executions go to the queue (no worker): a test runs the queued lanes in its own thread, and the lanes'
    target connections are closed after it."""
    from migrations_runner.services.runner.apply import lane_connections_close

    settings.MIGRATION_EXECUTOR = "queue"
    yield settings
    lane_connections_close()


@pytest.fixture
def clusters() -> Iterator[Callable[..., list[Cluster]]]:
    """Start ``count`` real ``qcluster`` processes on this test's control database; all are stopped afterwards,
    and the test fails if one of their processes survives."""
    started: list[Cluster] = []

    def start(count: int = 1, workers: int = 2, **env) -> list[Cluster]:
        for _ in range(count):
            started.append(Cluster(control_env(**env), workers=workers).start())
        return started[-count:]

    yield start
    for cluster in started:
        pids = cluster.pids()
        cluster.stop()
        assert not any(_alive(pid) for pid in pids), "a qcluster process survived its stop"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
