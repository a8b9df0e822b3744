"""Two qcluster processes sharing one broker: the ORM broker on a PostgreSQL control database, and Redis.

Everything runs in child processes against its own control database, as a scaled-out
deployment would: ``migrate``, fleet registration, two clusters, ``run_migrations --wait``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from psycopg import sql

from tests.support.qcluster import ROOT, Cluster, RedisServer, control_env
from tests.support.tools import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REGISTER = """
import json
from tests.support.postgres import PgServer
from tests.support.fleet import build_fleet
fleet = build_fleet(PgServer("{host}", {port}, "{user}", "{password}"), tenants_per_region=12)
print(json.dumps(fleet.databases))
"""


def manage(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_on_two_clusters(env: dict, pg_server) -> None:
    migrate = manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    code = REGISTER.format(
        host=pg_server.host, port=pg_server.port, user=pg_server.superuser, password=pg_server.superuser_password
    )
    registered = manage(env, "shell", "-c", code)
    assert registered.returncode == 0, registered.stderr[-3000:]
    databases = json.loads(registered.stdout.strip().splitlines()[-1])
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
        with pg_server.connect() as conn:
            for database in databases.values():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def test_two_clusters_share_the_orm_broker_on_a_postgresql_control_database(pg_server, pg_control, sets_dir):
    run_on_two_clusters(control_env(ADMIN_DATABASE_URL=pg_control, Q_BROKER_URL=""), pg_server)


def test_two_clusters_share_a_redis_broker(pg_server, pg_control, sets_dir):
    require_tool("redis-server")
    redis = RedisServer().start()
    try:
        run_on_two_clusters(control_env(ADMIN_DATABASE_URL=pg_control, Q_BROKER_URL=redis.url), pg_server)
    finally:
        redis.stop()
