"""Invalid indexes left by interrupted ``CREATE INDEX CONCURRENTLY``: dropped and rebuilt on re-run, never recorded.

A concurrent build waits for every transaction holding an older snapshot before it marks its index valid; a
REPEATABLE READ transaction that has read something holds the build there, so the test can kill the builder at
the point where a real worker death leaves the index INVALID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from migrations_runner.engine.apply import (
    ApplyOptions,
    ConnectionSource,
    TargetOutcome,
    TargetSpec,
    apply_target,
)
from migrations_runner.engine.sets import MigrationSet, load_set
from migrations_runner.engine.sqltext import created_concurrent_indexes
from migrations_runner.models import Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.conftest import PgDatabase
from tests.support.waiting import wait_finished, wait_until

pytestmark = [pytest.mark.postgres]

SCHEMA = "tenant_a"
SPEC = TargetSpec(
    schema=SCHEMA,
    create_schema=True,
    context={"schema": SCHEMA, "tenant_slug": "a", "region": "us-east", "database_type": "tenant"},
    label=f"test/{SCHEMA}",
)


def engine_source(pg: PgDatabase, application_name: str = "infra-test") -> ConnectionSource:
    """A connection source as the runners build one: the fleet's login role, our application name."""
    return ConnectionSource(
        lambda: psycopg.connect(
            host=pg.host,
            port=pg.port,
            dbname=pg.dbname,
            user=pg.user,
            password=pg.password,
            application_name=application_name,
        )
    )


def write_set(folder: Path, scripts: dict[str, str]) -> MigrationSet:
    """Write scripts into a tenant set folder and load it."""
    folder.mkdir(exist_ok=True)
    for name, text in scripts.items():
        (folder / name).write_text(text)
    mset = load_set(folder, "tenant")
    assert not mset.problems
    return mset


def options(**overrides) -> ApplyOptions:
    return ApplyOptions(installed_by="test", **{"retry_backoff_s": 0.1, **overrides})


def recorded_versions(conn: psycopg.Connection, schema: str = SCHEMA) -> list[str]:
    query = sql.SQL("SELECT version FROM {}.infra_schema_history WHERE type = 'SQL' ORDER BY installed_rank")
    return [version for (version,) in conn.execute(query.format(sql.Identifier(schema)))]


def index_valid(conn: psycopg.Connection, index: str) -> bool | None:
    """Whether the (schema-qualified) index is valid; None when it does not exist."""
    row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [index]).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def open_snapshot(connect: Callable[[], psycopg.Connection]) -> Iterator[psycopg.Connection]:
    """A REPEATABLE READ transaction that has read something: concurrent index builds wait for it to end."""
    with connect() as holder:
        holder.autocommit = False
        holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT count(*) FROM pg_class").fetchone()
        yield holder
        holder.rollback()


def wait_for_old_snapshots(observer: psycopg.Connection, index: str, timeout: float = 90) -> int:
    """Wait until a concurrent build of ``index`` waits for old snapshots (index still INVALID); return its pid."""
    row = wait_until(
        lambda: observer.execute(
            "SELECT pid FROM pg_stat_progress_create_index "
            "WHERE index_relid = to_regclass(%s) AND phase = 'waiting for old snapshots'",
            [index],
        ).fetchone(),
        timeout=timeout,
        interval=0.05,
        message=f"no build of {index} reached the wait for old snapshots",
    )
    return row[0]


def wait_backend_gone(observer: psycopg.Connection, pid: int, timeout: float = 30) -> None:
    wait_until(
        lambda: not observer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone(),
        timeout=timeout,
        message=f"backend {pid} still alive",
    )


def test_created_indexes_reads_names_as_postgresql_stores_them():
    # The index lives in its table's schema: builds on another schema's table are not this target's.
    text = "\n".join(
        [
            "-- CREATE INDEX CONCURRENTLY commented_out ON t (x);",
            "CREATE INDEX CONCURRENTLY Plain_Name ON t (x);",
            'create unique index concurrently if not exists "Quoted ""Name""" on t (y);',
            "CREATE INDEX CONCURRENTLY qualified ON tenant_a.t (z);",
            "CREATE INDEX CONCURRENTLY elsewhere ON other.t (z);",
            "CREATE INDEX CONCURRENTLY ON t (w);",
            "CREATE INDEX not_concurrent ON t (v);",
            '/* why */ CREATE INDEX CONCURRENTLY "Q2" ON ONLY "tenant_a" . t (u);',
            "SELECT 'CREATE INDEX CONCURRENTLY in_a_string ON t (x)';",
        ]
    )
    assert created_concurrent_indexes(text, SCHEMA) == ["plain_name", 'Quoted "Name"', "qualified", "Q2"]


def test_a_build_killed_mid_way_leaves_an_invalid_index_that_the_rerun_drops_and_rebuilds(pg, tmp_path, caplog):
    mset = write_set(
        tmp_path / "tenant",
        {
            "V1__t.sql": "CREATE TABLE t (x int);\nINSERT INTO t SELECT generate_series(1, 1000);\n",
            "V2__idx.sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_x_idx ON t (x);\n",
        },
    )
    index = f"{SCHEMA}.t_x_idx"
    result: dict[str, TargetOutcome] = {}
    with pg.connect() as observer:
        with open_snapshot(pg.connect):
            source = engine_source(pg, application_name=f"infra-test-{uuid.uuid4().hex[:8]}")
            worker = threading.Thread(
                target=lambda: result.update(outcome=apply_target(source, SPEC, mset, options(retry_attempts=0)))
            )
            worker.start()
            pid = wait_for_old_snapshots(observer, index)
            assert index_valid(observer, index) is False
            observer.execute("SELECT pg_terminate_backend(%s)", [pid])
            worker.join(timeout=60)
            source.close()
        killed = result["outcome"]
        assert killed.status == "failed"
        assert killed.error.version == "2"
        assert killed.to_version == "1"
        assert index_valid(observer, index) is False
        assert recorded_versions(observer) == ["1"]

        caplog.set_level(logging.WARNING, logger="migrations_runner.engine.apply")
        source = engine_source(pg)
        rerun = apply_target(source, SPEC, mset, options())
        source.close()
        assert rerun.status == "succeeded", rerun.error
        assert [(a.version, a.notes) for a in rerun.applied] == [
            ("2", [f"dropped invalid index {index} left by an interrupted build"])
        ]
        assert index_valid(observer, index) is True
        assert recorded_versions(observer) == ["1", "2"]
    dropped = [r for r in caplog.records if getattr(r, "index", None) == index]
    assert [(r.target, r.version, r.script) for r in dropped] == [(SPEC.label, "2", "V2__idx.sql")]


def test_a_failed_unique_build_is_dropped_and_rebuilt_once_the_data_is_fixed(pg, tmp_path):
    mset = write_set(
        tmp_path / "tenant",
        {
            "V1__t.sql": "CREATE TABLE t (id int, x int);\nINSERT INTO t VALUES (1, 1), (2, 1), (3, 2);\n",
            "V2__unique.sql": 'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "T x" ON t (x);\n',
        },
    )
    index = f'{SCHEMA}."T x"'
    source = engine_source(pg)
    first = apply_target(source, SPEC, mset, options())
    assert first.status == "failed"
    assert (first.error.kind, first.error.sqlstate, first.error.version) == ("sql", "23505", "2")
    with pg.connect() as conn:
        assert index_valid(conn, index) is False
        conn.execute("DELETE FROM tenant_a.t WHERE id = 2")
    # Without the drop, IF NOT EXISTS would keep the invalid index: a unique index that enforces nothing.
    second = apply_target(source, SPEC, mset, options())
    source.close()
    assert second.status == "succeeded", second.error
    assert second.applied[0].notes == [f"dropped invalid index {SCHEMA}.T x left by an interrupted build"]
    with pg.connect() as conn:
        assert index_valid(conn, index) is True
        assert recorded_versions(conn) == ["1", "2"]


def test_an_invalid_index_left_in_the_schema_fails_the_version_and_names_the_index(pg, tmp_path):
    folder = tmp_path / "tenant"
    mset = write_set(folder, {"V1__t.sql": "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1);\n"})
    source = engine_source(pg)
    assert apply_target(source, SPEC, mset, options()).status == "succeeded"
    with pg.connect() as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY t_x_idx ON tenant_a.t (x)")
    # The script's unnamed build gets another name (t_x_idx1) and succeeds; the invalid t_x_idx stays.
    mset = write_set(folder, {"V2__idx.sql": "CREATE INDEX CONCURRENTLY ON t (x);\n"})
    outcome = apply_target(source, SPEC, mset, options())
    source.close()
    assert outcome.status == "failed"
    assert outcome.attempts == 1
    assert (outcome.error.kind, outcome.error.version, outcome.error.script) == ("invalid_index", "2", "V2__idx.sql")
    assert "t_x_idx" in outcome.error.message
    assert "t_x_idx1" not in outcome.error.message
    with pg.connect() as conn:
        assert index_valid(conn, f"{SCHEMA}.t_x_idx") is False
        assert index_valid(conn, f"{SCHEMA}.t_x_idx1") is True
        assert recorded_versions(conn) == ["1"]


# The acceptance test on real workers comes last: it is the slowest, and it exercises the queued runner too.


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_qcluster_killed_during_a_concurrent_build_is_lost_and_its_retry_rebuilds_the_index(small_fleet, settings):
    from migrations_runner import services
    from migrations_runner.models import ExecutionStatus, TargetStatus
    from tests.qcluster import Cluster, control_env

    settings.MIGRATION_EXECUTOR = "queue"
    settings.MIGRATION_MAX_PER_DATABASE = 50
    settings.MIGRATION_LEASE_SECONDS = 6
    settings.MIGRATION_HEARTBEAT_SECONDS = 1
    tenant = small_fleet.tenants[0]
    index = f"{tenant.schema_name}.tasks_open_due_date_idx"  # the first build of the shipped V9
    clusters: list[Cluster] = []
    try:
        with small_fleet.connect("shared-us") as observer:
            with open_snapshot(lambda: small_fleet.connect("shared-us")):
                cluster = Cluster(control_env(), workers=1).start()
                clusters.append(cluster)
                execution = services.execution_start(
                    selection=TargetSelection(scope="tenant", tenants=[tenant.slug]),
                    options=ExecutionOptions(),
                    actor="test",
                    origin=Origin.API,
                )
                pid = wait_for_old_snapshots(observer, index)
                assert index_valid(observer, index) is False
                os.killpg(cluster.process.pid, signal.SIGKILL)
                cluster.process.wait(timeout=10)
                # The orphaned backend notices its client is gone (client_connection_check_interval) and exits.
                wait_backend_gone(observer, pid)
                assert index_valid(observer, index) is False

            run = execution.targets.get()

            def recovered() -> bool:
                services.targets_recover_lost()
                run.refresh_from_db()
                return run.status != TargetStatus.RUNNING

            wait_until(
                recovered,
                timeout=settings.MIGRATION_LEASE_SECONDS + 30,
                interval=0.5,
                message="the lost worker was not detected",
            )
            assert run.status == TargetStatus.FAILED
            assert run.error["kind"] == "worker_lost"
            execution = wait_finished(execution, timeout=30)
            assert execution.status == ExecutionStatus.FAILED
            assert "9" not in recorded_versions(observer, tenant.schema_name)

            clusters.append(Cluster(control_env(), workers=1).start())
            retry = services.execution_retry(execution=execution, actor="test", origin=Origin.API)
            retry = wait_finished(retry, timeout=120)
            assert retry.status == ExecutionStatus.COMPLETED
            assert retry.targets.get().to_version == "9"
            assert index_valid(observer, index) is True
            assert index_valid(observer, f"{tenant.schema_name}.invoices_unpaid_due_date_idx") is True
            assert recorded_versions(observer, tenant.schema_name)[-1] == "9"
    finally:
        for cluster in clusters:
            cluster.stop()


def test_an_unsafe_placeholder_value_fails_the_target_before_any_sql(pg, tmp_path):
    mset = write_set(tmp_path / "tenant", {"V1__t.sql": "CREATE TABLE t (note text DEFAULT '${tenant_slug}');"})
    spec = TargetSpec(
        schema=SCHEMA,
        create_schema=True,
        context={**SPEC.context, "tenant_slug": "a'); DROP TABLE x; --"},
        label=SPEC.label,
    )
    outcome = apply_target(engine_source(pg), spec, mset, options())
    assert outcome.status == "failed"
    assert outcome.error.kind == "placeholder"
    assert outcome.error.version == "1"
    with pg.connect() as conn:
        assert conn.execute("SELECT to_regclass('tenant_a.t')").fetchone()[0] is None
