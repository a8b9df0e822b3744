"""Two qcluster processes sharing one broker: the ORM broker on a PostgreSQL control database, and Redis.

Everything runs in child processes against its own control database, as a scaled-out
deployment would: ``migrate``, fleet registration, two clusters, ``run_migrations --wait``.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.qcluster import Cluster, RedisServer, control_env, drop_databases, manage, migrate_and_register
from tests.support.tools import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_on_two_clusters(env: dict, pg_server) -> None:
    databases = migrate_and_register(env, pg_server)
    clusters = [Cluster(env, workers=2).start() for _ in range(2)]
    try:
        try:
            result = manage(
                env, "run_migrations", "--scope", "tenant", "--batch-size", "6", "--wait", "--json", timeout=120
            )
        except subprocess.TimeoutExpired as exc:
            logs = "\n".join(cluster.output()[-4000:] for cluster in clusters)
            raise AssertionError(f"run_migrations did not finish:\n{logs}") from exc
        logs = "\n".join(cluster.output()[-3000:] for cluster in clusters)
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{logs}"
        data = json.loads(result.stdout)
        assert data["status"] == "completed"
        assert len(data["targets"]) == 24
        pids = {int(t["worker"].rsplit(":", 1)[1]) for t in data["targets"]}
        assert pids & clusters[0].pids(), "the first cluster ran no target"
        assert pids & clusters[1].pids(), "the second cluster ran no target"
    finally:
        for cluster in clusters:
            cluster.stop()
        drop_databases(pg_server, databases)


def test_two_clusters_share_the_orm_broker_on_a_postgresql_control_database(pg_server, pg_control, sets_dir):
    run_on_two_clusters(control_env(ADMIN_DATABASE_URL=pg_control, Q_BROKER_URL=""), pg_server)


def test_two_clusters_share_a_redis_broker(pg_server, pg_control, sets_dir):
    require_tool("redis-server")
    redis = RedisServer().start()
    try:
        run_on_two_clusters(control_env(ADMIN_DATABASE_URL=pg_control, Q_BROKER_URL=redis.url), pg_server)
    finally:
        redis.stop()
