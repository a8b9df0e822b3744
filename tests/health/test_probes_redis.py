"""The broker and task-queue checks of /health/detailed with a Redis broker, in this process (the served tests
run the app in a child process): Redis up without a worker, and Redis down."""

from __future__ import annotations

import pytest

from health import probes
from tests.support.qcluster import RedisServer
from tests.support.tools import require_tool

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis(settings):
    require_tool("redis-server")
    server = RedisServer().start()
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": server.url}
    yield server
    server.stop()


def service(name: str) -> probes.ServiceHealth:
    (only,) = probes.system_health(only=name).services
    return only


def test_a_reachable_redis_is_a_healthy_broker_with_its_address(redis):
    broker = service(probes.BROKER)
    assert broker.is_healthy
    assert broker.details == {"kind": "redis", "host": "127.0.0.1", "port": redis.port}
    assert broker.response_time_ms is not None


def test_redis_without_a_live_cluster_is_a_queue_nobody_works(redis):
    queue = service(probes.TASK_QUEUE)
    assert not queue.is_healthy
    assert queue.details["broker"] == "redis"
    assert queue.details["clusters_alive"] == 0
    assert queue.details["queued_tasks"] == 0
    assert queue.details["oldest_queued_age_seconds"] is None
    assert queue.details["error"] == "no queue worker seen at work: start `manage.py qcluster`"


def test_an_unreachable_redis_fails_the_broker_and_the_queue_but_not_the_control_database(settings, closed_port):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": f"redis://127.0.0.1:{closed_port}/0"}
    report = probes.system_health()
    by_name = {s.name: s for s in report.services}
    assert by_name[probes.CONTROL_DATABASE].is_healthy
    broker = by_name[probes.BROKER]
    assert not broker.is_healthy
    assert broker.details["kind"] == "redis"
    assert broker.details["port"] == closed_port
    assert broker.details["error"].startswith("ConnectionError: ")
    assert "Connection refused" in broker.details["error"]
    queue = by_name[probes.TASK_QUEUE]
    assert not queue.is_healthy
    assert queue.details["error"] == "the broker (Redis) did not answer"
    assert report.overall_status == probes.OverallStatus.DEGRADED
