"""Recording an outcome and claiming the next run in one round trip, on a PostgreSQL control database.

The suite's own control database is SQLite; these run a child process on a PostgreSQL control database (the path
lanes take in production): lanes in threads of one process, the caps observed by the target server itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest
from psycopg import sql

from tests.support.postgres import REGISTRY_PASSWORD, REGISTRY_USER
from tests.support.qcluster import FLEET_CHILD_PREAMBLE, ROOT, control_env

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

TENANTS = 18
CAP = 3  # MIGRATION_MAX_PER_DATABASE
# Each tenant's script waits a moment, then stores how many of the fleet's scripts the server was running at once.
# How many targets ran at once, as the server saw it: this one and those still sleeping in their probe (a backend's
# query text, cut at track_activity_query_size, may not reach the probe in a round trip of several statements).
PROBE = (
    "SELECT pg_sleep(0.15) AS concurrency_probe;\n"
    "CREATE TABLE seen AS SELECT count(*) + 1 AS n FROM pg_stat_activity\n"
    "WHERE datname = current_database() AND wait_event = 'PgSleep' AND pid <> pg_backend_pid();\n"
)

CHILD = FLEET_CHILD_PREAMBLE + textwrap.dedent(
    """
    import psycopg
    from django.db import DataError, connection
    from migrations_runner import services
    from migrations_runner.models import MigrationExecution, Origin, TargetRun
    from migrations_runner.options import ExecutionOptions
    from migrations_runner.selection import TargetSelection
    from migrations_runner.services.runner import claims

    at_once = []
    def counting(original):
        def counted(*a, **k):
            at_once.append(1)
            return original(*a, **k)
        return counted
    # An outcome goes in one round trip with the next claim, or with the start of the run claimed ahead.
    claims._record_and_claim_at_once = counting(claims._record_and_claim_at_once)
    claims._record_and_start_statement = counting(claims._record_and_start_statement)

    execution = services.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(batch_size=6), actor="test",
        origin=Origin.API, wait=True,
    )
    execution.refresh_from_db()
    out = {
        "status": execution.status,
        "succeeded": execution.targets_succeeded,
        "failed": execution.targets_failed,
        "runs": sorted(execution.targets.values_list("status", flat=True)),
        "at_once": len(at_once),
    }

    # The same runs again, claimed and recorded by hand, one at a time (a batch of 1: the run recorded must not
    # count as running when the next is claimed in the same statement).
    TargetRun.objects.filter(execution=execution).update(status="pending", worker="", started_at=None)
    MigrationExecution.objects.filter(pk=execution.pk).update(
        status="in_progress", current_phase=0, targets_succeeded=0, targets_failed=0, batch_size=1
    )
    execution.refresh_from_db()

    def counters():
        row = MigrationExecution.objects.filter(pk=execution.pk).values("targets_succeeded").get()
        return row["targets_succeeded"]

    def finished(run):
        run.status, run.to_version, run.duration_ms = "succeeded", "1", 5
        return run

    # 1. Recovered as lost while it ran: the recovery's record stands, nothing is counted, the next is claimed.
    first = claims.run_claim(execution=execution, worker="me")
    TargetRun.objects.filter(pk=first.pk).update(status="failed")
    second = claims.run_record_and_claim(run=finished(first), execution=execution, worker="me", claim=True)
    out["recovered"] = {
        "first": TargetRun.objects.get(pk=first.pk).status,
        "second": TargetRun.objects.filter(pk=second.pk).values_list("status", "worker").get(),
        "counted": counters(),
    }

    # 2. Recorded: written, counted, and the next run claimed in the same transaction.
    third = claims.run_record_and_claim(run=finished(second), execution=execution, worker="me", claim=True)
    out["recorded"] = {
        "second": TargetRun.objects.get(pk=second.pk).status,
        "third": TargetRun.objects.filter(pk=third.pk).values_list("status", "worker").get(),
        "counted": counters(),
    }

    # 3. A round trip that fails (a value too long for its column): nothing of it stays, the connection is usable
    # and not left in a transaction, and the claim lock is free.
    bad = finished(third)
    bad.to_version = "9" * 200
    try:
        claims.run_record_and_claim(run=bad, execution=execution, worker="me", claim=True)
        raised = ""
    except DataError as exc:
        raised = type(exc).__name__
    idle = connection.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], user=settings["USER"], password=settings["PASSWORD"],
        dbname=settings["NAME"], autocommit=True,
    ) as other:
        lock_free = other.execute("SELECT pg_try_advisory_lock(%s)", [claims._CLAIM_LOCK]).fetchone()[0]
    out["failed_round_trip"] = {
        "raised": raised,
        "idle": idle,
        "lock_free": lock_free,
        "third": TargetRun.objects.filter(pk=third.pk).values_list("status", "worker").get(),
        "running": TargetRun.objects.filter(execution=execution, status="running").count(),
        "counted": counters(),
        "usable": TargetRun.objects.filter(execution=execution).count(),
    }

    # 4. Claimed ahead, then started in the place of the run recorded: both per-target statements are prepared
    # statements of this connection (planned once, not at every target), and do what they did unprepared.
    third.to_version = "1"
    (ahead,) = claims.run_claim_ahead(execution=execution, worker="me", current=third)
    reserved = TargetRun.objects.filter(pk=ahead.pk).values_list("status", "worker").get()
    started = claims.run_record_and_start(run=third, start=ahead, execution=execution, worker="me")
    several = claims.run_claim_ahead(execution=execution, worker="me", current=ahead, count=3)
    reserved_several = sorted(TargetRun.objects.filter(worker="me", status="pending").values_list("pk", flat=True))
    claims.run_unclaim(runs=several, worker="me")
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    out["prepared"] = {
        "reserved": reserved,
        "started": started,
        "ahead": TargetRun.objects.filter(pk=ahead.pk).values_list("status", "worker").get(),
        "third": TargetRun.objects.get(pk=third.pk).status,
        "counted": counters(),
        "claim_ahead": sum("picked AS MATERIALIZED" in text for text in prepared),
        "record_and_start": sum("recorded AS" in text for text in prepared),
        "several": [run.pk for run in several],
        "reserved_several": reserved_several,
        "given_back": TargetRun.objects.filter(worker="me", status="pending").count(),
    }
    print(json.dumps(out))
    """
)


@pytest.fixture
def fleet_database(pg_server):
    name = f"claims_{uuid.uuid4().hex[:10]}"
    with pg_server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(REGISTRY_USER)))
    yield name
    with pg_server.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _fleet_child(code: str, pg_server, database: str, *, tenants: int, script: str, sets, **env: str) -> dict:
    """Run ``code`` (after ``FLEET_CHILD_PREAMBLE``'s fleet of ``tenants`` on ``database``, whose tenant set has one
    version, ``script``) in a child process with ``env``; what it printed last, as JSON."""
    for database_type in ("admin", "shared", "analytics", "tenant"):
        (sets / database_type).mkdir(parents=True)
    (sets / "tenant" / "V1__probe.sql").write_text(script)
    args = {
        "host": pg_server.host,
        "port": pg_server.port,
        "database": database,
        "user": REGISTRY_USER,
        "password": REGISTRY_PASSWORD,
        "tenants": tenants,
    }
    child = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        cwd=ROOT,
        env=control_env(MIGRATIONS_DIR=str(sets), **env),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_outcomes_and_claims_in_one_round_trip_keep_the_cap_the_counters_and_the_recovery(
    pg_server, pg_control, fleet_database, tmp_path
):
    out = _fleet_child(
        CHILD,
        pg_server,
        fleet_database,
        tenants=TENANTS,
        script=PROBE,
        sets=tmp_path / "sets",
        ADMIN_DATABASE_URL=pg_control,
        MIGRATION_EXECUTOR="inline",
        MIGRATION_MAX_PER_DATABASE=str(CAP),
    )

    # Lanes recorded and claimed in one round trip, and the execution's counters say what its runs say.
    assert out["status"] == "completed"
    assert out["runs"] == ["succeeded"] * TENANTS
    assert (out["succeeded"], out["failed"]) == (TENANTS, 0)
    assert out["at_once"] >= TENANTS - 6  # each lane's first claim is alone; every later one came with an outcome

    # The per-server cap held, as the target server saw it, and was reached: the lanes did run side by side.
    with pg_server.connect(fleet_database) as conn:
        seen = [
            conn.execute(sql.SQL("SELECT n FROM {}.seen").format(sql.Identifier(f"tenant_t{index:03d}"))).fetchone()[0]
            for index in range(TENANTS)
        ]
    assert max(seen) <= CAP
    assert max(seen) >= 2

    recovered = out["recovered"]
    assert recovered["first"] == "failed"  # the recovery's record stands
    assert recovered["second"] == ["running", "me"]
    assert recovered["counted"] == 0

    recorded = out["recorded"]
    assert recorded["second"] == "succeeded"
    assert recorded["third"] == ["running", "me"]
    assert recorded["counted"] == 1

    failed = out["failed_round_trip"]
    assert failed["raised"] == "DataError"
    assert failed["idle"] is True
    assert failed["lock_free"] is True
    assert failed["third"] == ["running", "me"]  # its outcome was not written
    assert failed["running"] == 1  # and no other run was claimed
    assert failed["counted"] == 1
    assert failed["usable"] == TENANTS

    prepared = out["prepared"]
    assert prepared["reserved"] == ["pending", "me"]
    assert prepared["started"] is True
    assert prepared["ahead"] == ["running", "me"]
    assert prepared["third"] == "succeeded"
    assert prepared["counted"] == 2
    assert (prepared["claim_ahead"], prepared["record_and_start"]) == (1, 1)
    # Several at once: exactly as many as asked (the candidates are picked once, whatever the plan), in order.
    assert len(prepared["several"]) == 3
    assert prepared["several"] == prepared["reserved_several"]
    assert prepared["given_back"] == 0


PLAN_CHILD = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from django.db import connection
    from connections import services as registry
    from migrations_runner.models import MigrationExecution, TargetRun
    from migrations_runner.services.runner import claims

    args = json.loads(sys.argv[1])
    shared = registry.connection_create(
        actor="test", verify=False, name="shared-us", database_type="shared", region="us-east",
        host=args["host"], port=args["port"], database_name="unused", username="u", password="p",
        ssl_mode="disable", connect_timeout=5,
    )
    execution = MigrationExecution.objects.create(
        scope="tenant", executed_by="test", status="in_progress", batch_size=4, current_phase=0
    )
    TargetRun.objects.bulk_create(
        TargetRun(execution=execution, connection=shared, schema_name=f"tenant_{n:05d}", database_type="tenant",
                  server="127.0.0.1:1")
        for n in range(args["runs"])
    )
    table = TargetRun._meta.db_table
    with connection.cursor() as cursor:
        # Statistics taken while every run was pending, kept so while most of them finish.
        cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        cursor.execute(f"ANALYZE {table}")
    ids = list(execution.targets.order_by("id").values_list("id", flat=True))
    TargetRun.objects.filter(id__in=ids[: args["done"]]).update(status="succeeded")
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + claims._claim_statement(0), claims._claim_params(execution, "me", []))
        plan = [row[0] for row in cursor.fetchall()]
    claimed = claims.run_claim(execution=execution, worker="me")
    print(json.dumps({
        "candidate_scan": [line.strip() for line in plan if f"on {table} c" in line],
        "claimed": claimed.pk,
        "first_pending": ids[args["done"]],
    }))
    """
)


def test_a_claim_reads_the_claim_index_even_on_statistics_from_before_the_runs_finished(pg_server, pg_control):
    # Planned on statistics where every run is pending, an order by id alone let the primary key serve the claim
    # and walk past every run finished since: O(runs done) a claim.
    env = control_env(ADMIN_DATABASE_URL=pg_control)
    args = {"host": pg_server.host, "port": pg_server.port, "runs": 3000, "done": 2900}
    child = subprocess.run(
        [sys.executable, "-c", PLAN_CHILD, json.dumps(args)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert child.returncode == 0, child.stderr[-4000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert len(out["candidate_scan"]) == 1
    assert "target_run_claim" in out["candidate_scan"][0]
    assert out["claimed"] == out["first_pending"]  # the same run as ordering by id: the lowest pending one


ANALYZE_CHILD = FLEET_CHILD_PREAMBLE + textwrap.dedent(
    """
    from django.db import connection
    from migrations_runner import services
    from migrations_runner.models import Origin, TargetRun
    from migrations_runner.options import ExecutionOptions
    from migrations_runner.selection import TargetSelection
    from migrations_runner.services import executions

    executions.ANALYZE_FROM = args["tenants"]

    def analyzed():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = %s",
                [TargetRun._meta.db_table],
            )
            return cursor.fetchone()[0]

    def start(**options):
        return services.execution_start(
            selection=TargetSelection(scope="tenant"), options=ExecutionOptions(**options), actor="test",
            origin=Origin.API,
        )

    out = {"before": analyzed()}
    start(dry_run=True)
    out["after_dry_run"] = analyzed()
    queued = start()
    out["after_run"] = analyzed()
    out["pending"] = queued.targets.filter(status="pending").count()
    print(json.dumps(out))
    """
)


def test_planning_enough_runs_to_apply_refreshes_the_statistics_of_the_runs_table(
    pg_server, pg_control, fleet_database, tmp_path
):
    out = _fleet_child(
        ANALYZE_CHILD,
        pg_server,
        fleet_database,
        tenants=6,
        script="CREATE TABLE t (id int);\n",
        sets=tmp_path / "sets",
        ADMIN_DATABASE_URL=pg_control,
        MIGRATION_EXECUTOR="queue",
    )
    assert out == {"before": False, "after_dry_run": False, "after_run": True, "pending": 6}
