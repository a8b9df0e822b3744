"""The control database (PostgreSQL) briefly unreachable during a queued execution: the lanes reconnect, the
execution completes, and no target run is lost or applied twice."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from infra_site.embedded_postgres import EmbeddedPostgres
from tests.support.postgres import REGISTRY_PASSWORD, REGISTRY_USER
from tests.support.qcluster import FLEET_CHILD_PREAMBLE, ROOT, Cluster, control_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

TENANTS = 40

SETUP = FLEET_CHILD_PREAMBLE + textwrap.dedent(
    """
    from migrations_runner import services
    from migrations_runner.models import Origin
    from migrations_runner.options import ExecutionOptions
    from migrations_runner.selection import TargetSelection
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(batch_size=4), actor="test",
        origin=Origin.API,
    )
    print(execution.pk)
    """
)


def control_query(server: EmbeddedPostgres, query: str, params=()) -> list[tuple]:
    with psycopg.connect(**server.conninfo("control"), autocommit=True, connect_timeout=3) as conn:
        return conn.execute(query, params).fetchall()


@pytest.mark.parametrize("wait", ["120", "0"], ids=["lanes-wait-for-the-database", "lanes-give-up"])
def test_a_control_database_outage_mid_run_loses_no_target_and_applies_none_twice(pg_server, sets_dir, tmp_path, wait):
    """With the default wait the execution completes; a lane that gives up at once releases its lease, so the
    recovery fails its target as lost and the execution ends (failed) rather than hanging."""
    slow = sets_dir / "tenant" / "V2__create_projects.sql"
    slow.write_text("SELECT pg_sleep(0.5);\n" + slow.read_text())
    control = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="infra-control-pg-"))).start()
    fleet_db = f"outage_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(**control.conninfo(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE control")
        with pg_server.connect() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(fleet_db), sql.Identifier(REGISTRY_USER))
            )
        env = control_env(
            ADMIN_DATABASE_URL=control.url("control"),
            MIGRATIONS_DIR=str(sets_dir),
            MIGRATION_LEASE_SECONDS="15",
            MIGRATION_HEARTBEAT_SECONDS="1",
            MIGRATION_MAX_PER_DATABASE="8",
            MIGRATION_CONTROL_DB_WAIT=wait,
        )
        args = {
            "host": pg_server.host,
            "port": pg_server.port,
            "database": fleet_db,
            "user": REGISTRY_USER,
            "password": REGISTRY_PASSWORD,
            "tenants": TENANTS,
        }
        setup = subprocess.run(
            [sys.executable, "-c", SETUP, json.dumps(args)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert setup.returncode == 0, setup.stderr[-3000:]
        execution_id = setup.stdout.strip().splitlines()[-1]
        cluster = Cluster(env, workers=2).start()
        try:

            def succeeded() -> int:
                return control_query(
                    control,
                    "SELECT count(*) FROM migrations_runner_targetrun WHERE execution_id = %s AND status = 'succeeded'",
                    [execution_id],
                )[0][0]

            def status_now() -> str:
                query = "SELECT status FROM migrations_runner_migrationexecution WHERE id = %s"
                return control_query(control, query, [execution_id])[0][0]

            wait_until(lambda: succeeded() >= 4, timeout=60, message=lambda: cluster.output()[-3000:])
            control.stop()  # every session to the control database ends now
            time.sleep(4)  # the outage itself: its length is the scenario under test
            control.start()
            wait_until(
                lambda: status_now() not in ("pending", "in_progress"),
                timeout=150,
                interval=0.5,
                message=lambda: f"still {status_now()}:\n{cluster.output()[-4000:]}",
            )
            status = status_now()
            runs = control_query(
                control, "SELECT status, error FROM migrations_runner_targetrun WHERE execution_id = %s", [execution_id]
            )
            assert len(runs) == TENANTS
            if wait == "0":
                assert status == "failed"
                lost = [error for state, error in runs if state == "failed"]
                assert lost
                assert all(error["kind"] == "worker_lost" for error in lost)
                return
            assert status == "completed", (runs, cluster.output()[-4000:])
            assert {row[0] for row in runs} == {"succeeded"}
        finally:
            cluster.stop()
        with pg_server.connect(fleet_db) as conn:
            for index in range(TENANTS):
                rows = conn.execute(
                    sql.SQL(
                        "SELECT version, count(*) FROM {}.infra_schema_history WHERE type = 'SQL' GROUP BY 1"
                    ).format(sql.Identifier(f"tenant_t{index:03d}"))
                ).fetchall()
                assert len(rows) == 9
                assert all(count == 1 for _, count in rows)
    finally:
        control.destroy()
        with pg_server.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(fleet_db)))
