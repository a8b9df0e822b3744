"""Invalid indexes left by interrupted ``CREATE INDEX CONCURRENTLY``: dropped and rebuilt on re-run, never recorded.

A concurrent build waits for every transaction holding an older snapshot before it marks its index valid; a
REPEATABLE READ transaction that has read something holds the build there, so the test can kill the builder at
the point where a real worker death leaves the index INVALID.
"""

from __future__ import annotations

import logging
import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from migrations_runner.engine.apply import (
    _INVALID_INDEXES,
    _INVALID_INDEXES_NAMED,
    TargetOutcome,
    TargetSpec,
    apply_target,
    invalid_indexes,
)
from migrations_runner.engine.sqltext import created_concurrent_indexes
from tests.support.engine import (
    SCHEMA,
    SPEC,
    engine_source,
    index_valid,
    open_snapshot,
    options,
    recorded_versions,
    wait_for_old_snapshots,
    write_set,
)
from tests.support.plans import keys_of, plan_root, scans

pytestmark = [pytest.mark.postgres]


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


def _failed_unique_build(conn: psycopg.Connection, statement: str) -> None:
    """Run a ``CREATE UNIQUE INDEX CONCURRENTLY`` over duplicates: it fails and leaves its index INVALID."""
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(statement)


def test_the_invalid_indexes_of_a_schema_are_its_tables_views_and_partitions_only(pg):
    with pg.connect() as conn:
        conn.autocommit = True
        for schema in ("tenant_a", "tenant_b"):
            conn.execute(
                sql.SQL(
                    "CREATE SCHEMA {s}; SET search_path TO {s};"
                    "CREATE TABLE t (x int, y int); INSERT INTO t VALUES (1, 1), (1, 2);"
                    "CREATE INDEX t_y_idx ON t (y);"
                    "CREATE MATERIALIZED VIEW mv AS SELECT x FROM t;"
                    "CREATE TABLE p (x int) PARTITION BY LIST (x);"
                    "CREATE TABLE p1 PARTITION OF p FOR VALUES IN (1); INSERT INTO p VALUES (1), (1);"
                    "CREATE INDEX p_x_idx ON ONLY p (x);"  # partitioned, invalid until p1's is attached
                    "RESET search_path"
                ).format(s=sql.Identifier(schema))
            )
            for statement in (
                "CREATE UNIQUE INDEX CONCURRENTLY t_x_key ON {s}.t (x)",
                'CREATE UNIQUE INDEX CONCURRENTLY "MV x" ON {s}.mv (x)',
                "CREATE UNIQUE INDEX CONCURRENTLY p1_x_key ON {s}.p1 (x)",
            ):
                _failed_unique_build(conn, sql.SQL(statement).format(s=sql.Identifier(schema)).as_string(conn))
        conn.execute("DROP INDEX CONCURRENTLY tenant_b.t_x_key")
        assert invalid_indexes(conn, "tenant_a") == ["MV x", "p1_x_key", "t_x_key"]
        assert invalid_indexes(conn, "tenant_b") == ["MV x", "p1_x_key"]
        assert invalid_indexes(conn, "tenant_a", ["t_x_key", "t_y_idx", "absent"]) == ["t_x_key"]
        assert invalid_indexes(conn, "absent") == []


@pytest.mark.parametrize(
    ("query", "types", "args", "keys"),
    [
        (_INVALID_INDEXES, "(text)", "'tenant_1'", {"pg_index": "indrelid", "pg_class": "oid"}),
        (
            _INVALID_INDEXES_NAMED,
            "(text, text[])",
            "'tenant_1', '{t_pkey}'",
            {"pg_class": "relname", "pg_index": "indexrelid"},
        ),
    ],
    ids=["all", "named"],
)
def test_the_invalid_index_checks_read_the_schemas_rows_by_key_not_all_of_the_databases(pg, query, types, args, keys):
    # No index of pg_index leads with indisvalid: a check that filters all of it costs as much as the database
    # has indexes (1.7 ms at 1,000 tenants, for each target with a concurrent build). With sequential scans off,
    # a generic plan must still reach the indexes by key: all of them through their tables (pg_index by indrelid),
    # named ones by name in the schema (pg_class by relname and relnamespace).
    with pg.connect() as conn:
        conn.autocommit = True
        for n in range(3):
            conn.execute(
                sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.t (x int PRIMARY KEY)").format(
                    s=sql.Identifier(f"tenant_{n}")
                )
            )
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET enable_seqscan = off")
        conn.execute(f"PREPARE invalid {types} AS " + query.replace("%(schema)s", "$1").replace("%(names)s", "$2"))
        (plan,) = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE invalid({args})").fetchone()
    for relation, key in keys.items():
        found = scans(plan_root(plan), relation=relation)
        assert found, (relation, plan)
        for scan in found:
            assert key in keys_of(scan), (relation, scan)
