"""A target's consecutive transactional scripts in one round trip: once seen on the database, within the budget,
each still in its own transaction with its history row; what a failure, a lock wait or a lost connection in the
middle of one leaves."""

from __future__ import annotations

import threading
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from migrations_runner.engine.apply import ConnectionSource, _HeldLock, apply_target
from tests.support.engine import SPEC, options, recorded_versions, table_locked, write_set
from tests.support.postgres import PgDatabase
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres]

B = replace(SPEC, schema="tenant_b", context={**SPEC.context, "schema": "tenant_b", "tenant_slug": "b"}, label="b")
FOUR = {
    f"V{n}__{t}.sql": f"CREATE TABLE {t} (x int);\nINSERT INTO {t} VALUES ({n});\n" for n, t in enumerate("abcd", 1)
}


class _Counting(psycopg.Connection):
    """A connection that counts the round trips sent through ``execute``."""

    sent = 0

    def execute(self, *args, **kwargs):  # type: ignore[override]
        type(self).sent += 1
        return super().execute(*args, **kwargs)


def counting_source(pg: PgDatabase) -> tuple[ConnectionSource, type[_Counting]]:
    """A connection source whose connections count their round trips (in the class returned)."""
    counting = type("Counting", (_Counting,), {"sent": 0})
    params = {"host": pg.host, "port": pg.port, "dbname": pg.dbname, "user": pg.user, "password": pg.password}
    return ConnectionSource(lambda: counting.connect(**params)), counting


def as_fleet_user(pg: PgDatabase) -> psycopg.Connection:
    """A connection as the role the engine connects with (the owner of what it creates), in autocommit."""
    params = {"host": pg.host, "port": pg.port, "dbname": pg.dbname, "user": pg.user, "password": pg.password}
    return psycopg.connect(**params, autocommit=True)


def history_rows(conn: psycopg.Connection, schema: str) -> list[tuple]:
    query = sql.SQL("SELECT version, type, script, checksum, success FROM {} ORDER BY installed_rank")
    return conn.execute(query.format(sql.Identifier(schema, "infra_schema_history"))).fetchall()


def durations(conn: psycopg.Connection, schema: str) -> list[int]:
    query = sql.SQL("SELECT execution_time_ms FROM {} ORDER BY installed_rank")
    return [ms for (ms,) in conn.execute(query.format(sql.Identifier(schema, "infra_schema_history")))]


def spec_of(schema: str):
    return replace(SPEC, schema=schema, context={**SPEC.context, "schema": schema}, label=schema)


def round_trips(source: ConnectionSource, counting: type[_Counting], schema: str, mset, **overrides):
    """Apply ``mset`` to ``schema``: the outcome and the round trips it sent."""
    counting.sent = 0
    outcome = apply_target(source, spec_of(schema), mset, options(**overrides))
    assert outcome.status == "succeeded"
    return outcome, counting.sent


def test_scripts_seen_on_the_database_share_one_round_trip_with_their_own_rows(pg, tmp_path):
    mset = write_set(tmp_path / "tenant", FOUR)
    source, counting = counting_source(pg)
    round_trips(source, counting, "tenant_a", mset)  # the first target: nothing seen yet
    _, apart = round_trips(source, counting, "tenant_c", mset, join_scripts_ms=0)
    second, joined = round_trips(source, counting, "tenant_b", mset)
    assert joined == apart - 3  # the four scripts in one round trip
    assert [a.version for a in second.applied] == ["1", "2", "3", "4"]
    assert second.to_version == "4"
    with pg.connect() as conn:
        assert history_rows(conn, "tenant_b") == history_rows(conn, "tenant_a")  # the same rows, all successful
        # Each script in its own transaction: its row's duration is its own, as the outcome reports it.
        assert [a.duration_ms for a in second.applied] == durations(conn, "tenant_b")
        assert conn.execute("SELECT x FROM tenant_b.d").fetchall() == [(4,)]
        held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
        assert held == 0  # the lock went with the last script's round trip
    source.close()


def seen_with_a_slow_v2(pg: PgDatabase, tmp_path, seconds: float):
    """FOUR with a V2 that sleeps ``seconds``, applied once to tenant_a (so seen): the set, the source and its
    round trip counter."""
    scripts = {**FOUR, "V2__b.sql": f"CREATE TABLE b (x int);\nSELECT pg_sleep({seconds});\n"}
    mset = write_set(tmp_path / "tenant", scripts)
    source, counting = counting_source(pg)
    round_trips(source, counting, "tenant_a", mset)
    return mset, source, counting


def test_each_script_of_a_joined_round_trip_records_its_own_duration(pg, tmp_path):
    mset, source, counting = seen_with_a_slow_v2(pg, tmp_path, 0.2)
    outcome, joined = round_trips(source, counting, "tenant_b", mset, join_scripts_ms=60_000)
    assert joined == 1  # the four scripts at once (the lock and history read went in a pipeline)
    took = [a.duration_ms for a in outcome.applied]
    # The round trip's transactions all began when the server received it (now()): V3 and V4 count from their own
    # start, not from there, so V2's sleep is in its duration alone.
    assert took[1] >= 200
    assert max(took[2], took[3]) < 200
    with pg.connect() as conn:
        assert durations(conn, "tenant_b") == took
    source.close()


def test_joining_stops_at_the_budget(pg, tmp_path):
    mset, source, counting = seen_with_a_slow_v2(pg, tmp_path, 0.3)
    _, apart = round_trips(source, counting, "tenant_c", mset, join_scripts_ms=0)
    outcome, joined = round_trips(source, counting, "tenant_b", mset, join_scripts_ms=250)
    # V1 alone (V2's 300 ms would pass the budget), V2 alone (the same with V3), V3 and V4 together.
    assert joined == apart - 1
    assert [a.version for a in outcome.applied] == ["1", "2", "3", "4"]
    assert outcome.applied[1].duration_ms >= 300
    source.close()


def test_a_failure_inside_a_joined_round_trip_keeps_what_committed_before_it(pg, tmp_path):
    mset = write_set(tmp_path / "tenant", FOUR)
    source, _ = counting_source(pg)
    assert apply_target(source, SPEC, mset, options()).status == "succeeded"
    with as_fleet_user(pg) as conn:
        conn.execute("CREATE SCHEMA tenant_b; CREATE TABLE tenant_b.b (y int)")  # V2 will fail there
    outcome = apply_target(source, B, mset, options())
    assert outcome.status == "failed"
    error = outcome.error
    assert (error.kind, error.sqlstate, error.version, error.script) == ("sql", "42P07", "2", "V2__b.sql")
    assert (error.statement, error.statement_index) == ("CREATE TABLE b (x int);", 0)
    assert [a.version for a in outcome.applied] == ["1"]  # committed in the round trip before V2 failed
    assert outcome.to_version == "1"
    with pg.connect() as conn:
        assert recorded_versions(conn, "tenant_b") == ["1"]
        assert [a.duration_ms for a in outcome.applied] == durations(conn, "tenant_b")
        assert conn.execute("SELECT to_regclass('tenant_b.c')").fetchone()[0] is None  # nothing after V2 ran
    source.close()


def test_a_lock_wait_inside_a_joined_round_trip_is_retried_from_the_script_that_waited(pg, tmp_path):
    scripts = {**FOUR, "V2__b.sql": "CREATE TABLE b (x int);\nALTER TABLE t ADD COLUMN y int;\n"}
    mset = write_set(tmp_path / "tenant", scripts)
    source, _ = counting_source(pg)
    with as_fleet_user(pg) as conn:
        conn.execute("CREATE SCHEMA tenant_a; CREATE TABLE tenant_a.t (x int)")
        conn.execute("CREATE SCHEMA tenant_b; CREATE TABLE tenant_b.t (x int)")
    assert apply_target(source, SPEC, mset, options()).status == "succeeded"
    with table_locked(pg, "tenant_b.t"):
        outcome = apply_target(source, B, mset, options(lock_timeout_s=0.2))
    assert outcome.status == "succeeded"
    assert outcome.lock_attempts >= 1
    assert [a.version for a in outcome.applied] == ["1", "2", "3", "4"]  # V1 once: its commit was kept
    with pg.connect() as conn:
        assert recorded_versions(conn, "tenant_b") == ["1", "2", "3", "4"]
    source.close()


def test_a_connection_lost_inside_a_joined_round_trip_reports_what_committed(pg, tmp_path):
    scripts = {
        **FOUR,
        "V2__b.sql": "CREATE TABLE b (x int);\nSELECT pg_sleep(60) FROM public.hold WHERE s = current_schema();\n",
    }
    mset = write_set(tmp_path / "tenant", scripts)
    source, _ = counting_source(pg)
    with as_fleet_user(pg) as conn:
        conn.execute("CREATE TABLE public.hold (s text)")
    assert apply_target(source, SPEC, mset, options(join_scripts_ms=60_000)).status == "succeeded"
    with pg.connect() as observer:
        observer.execute("INSERT INTO public.hold VALUES ('tenant_b')")
        outcome: list = []
        worker = threading.Thread(
            target=lambda: outcome.append(apply_target(source, B, mset, options(join_scripts_ms=60_000)))
        )
        worker.start()
        (pid,) = wait_until(
            lambda: observer.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone(),
            message="the joined round trip never reached V2's sleep",
        )
        observer.execute("DELETE FROM public.hold")  # the retry runs V2 at once
        observer.execute("SELECT pg_terminate_backend(%s)", [pid])
        worker.join(timeout=60)
    (result,) = outcome
    assert result.status == "succeeded"
    assert result.attempts == 2
    # V1 committed before the connection went: the retry found it applied and reports it with its row's duration.
    assert [a.version for a in result.applied] == ["1", "2", "3", "4"]
    with pg.connect() as conn:
        assert recorded_versions(conn, "tenant_b") == ["1", "2", "3", "4"]
        assert result.applied[0].duration_ms == durations(conn, "tenant_b")[0]
    source.close()


def test_a_failure_after_the_last_commit_of_a_joined_round_trip_is_retried_and_loses_nothing(pg, tmp_path, monkeypatch):
    mset = write_set(tmp_path / "tenant", FOUR)
    source, counting = counting_source(pg)
    round_trips(source, counting, "tenant_a", mset)
    # The unlock that ends the round trip fails once, after every script committed.
    failing = iter(["SELECT 1/0"])
    unlock = _HeldLock.release_statement
    monkeypatch.setattr(_HeldLock, "release_statement", lambda self, conn: next(failing, None) or unlock(self, conn))
    outcome = apply_target(source, spec_of("tenant_b"), mset, options())
    assert outcome.status == "succeeded"
    assert outcome.attempts == 2  # the retry found everything applied
    assert [a.version for a in outcome.applied] == ["1", "2", "3", "4"]
    with pg.connect() as conn:
        assert recorded_versions(conn, "tenant_b") == ["1", "2", "3", "4"]
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0
    source.close()
