"""``run_migrations --sync`` on a PostgreSQL control database: its lanes are threads of the command's process,
each holding control-database connections while it works, and they find room in the process's pool of
connections however small the pool is set (``infra_site.connection_pool``)."""

from __future__ import annotations

import json

import pytest

from tests.support.qcluster import control_env, drop_databases, manage, migrate_and_register

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_sync_lanes_find_room_in_a_pool_smaller_than_they_need(pg_server, pg_control, sets_dir):
    # Six lanes hold up to 19 connections; the pool alone would give two, and the others would wait for one until
    # the pool's timeout (30 s) while their leases expired.
    env = control_env(ADMIN_DATABASE_URL=pg_control, DB_POOL_MAX_SIZE="2")
    databases = migrate_and_register(env, pg_server)
    try:
        result = manage(env, "run_migrations", "--scope", "tenant", "--batch-size", "6", "--sync", "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        data = json.loads(result.stdout)
        assert data["status"] == "completed"
        assert [t["status"] for t in data["targets"]] == ["succeeded"] * 24
        assert "couldn't get a connection" not in result.stderr  # what a lane logs when the pool had none
        assert "lost its worker" not in result.stderr
    finally:
        drop_databases(pg_server, databases)
