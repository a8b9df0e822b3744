"""Undoing versions on one target: cancel between undo scripts, transient retries, where a failure leaves it."""

from __future__ import annotations

import pytest

from migrations_runner.engine.apply import apply_target, undo_target
from migrations_runner.engine.sets import Version
from tests.support.engine import SPEC, engine_source, options, recorded_versions, table_locked, write_set

pytestmark = [pytest.mark.postgres]

THREE_TABLES = {
    **{f"V{n}__{t}.sql": f"CREATE TABLE {t} (x int);\n" for n, t in ((1, "a"), (2, "b"), (3, "c"))},
    **{f"U{n}__{t}.sql": f"DROP TABLE {t};\n" for n, t in ((1, "a"), (2, "b"), (3, "c"))},
}
ALL = [Version.parse(v) for v in ("1", "2", "3")]


@pytest.fixture
def three_tables(pg, tmp_path):
    """A target at version 3 (tables a, b, c), each version with an undo script."""
    mset = write_set(tmp_path / "tenant", THREE_TABLES)
    source = engine_source(pg)
    assert apply_target(source, SPEC, mset, options()).to_version == "3"
    yield mset, source
    source.close()


def test_undo_stops_between_scripts_when_asked_and_keeps_the_rest_applied(pg, three_tables):
    mset, source = three_tables
    asked = []

    def should_stop() -> bool:
        asked.append(True)
        return len(asked) > 1  # after the first undo script

    outcome = undo_target(source, SPEC, mset, ALL, options(should_stop=should_stop))
    assert outcome.status == "cancelled"
    assert outcome.error.kind == "cancelled"
    assert [(a.version, a.kind) for a in outcome.applied] == [("3", "UNDO")]
    assert (outcome.from_version, outcome.to_version) == ("3", "2")
    with pg.connect() as conn:
        assert recorded_versions(conn) == ["1", "2"]
        assert conn.execute("SELECT to_regclass('tenant_a.b') IS NOT NULL").fetchone()[0]


def test_undo_retries_a_lock_timeout_until_the_lock_is_free(pg, three_tables):
    mset, source = three_tables
    with table_locked(pg, "tenant_a.c"):
        outcome = undo_target(source, SPEC, mset, [Version.parse("3")], options(lock_timeout_s=0.2, retry_attempts=6))
    assert outcome.status == "succeeded", outcome.error
    assert outcome.lock_attempts >= 1  # lock waits are retried apart from other transient errors
    assert [a.version for a in outcome.applied] == ["3"]
    assert outcome.to_version == "2"
    with pg.connect() as conn:
        assert recorded_versions(conn) == ["1", "2"]


def test_a_failing_undo_is_not_retried_and_reports_the_version_the_target_is_left_at(pg, tmp_path):
    mset = write_set(tmp_path / "tenant", {**THREE_TABLES, "U2__b.sql": "DROP TABLE no_such_table;\n"})
    source = engine_source(pg)
    try:
        apply_target(source, SPEC, mset, options())
        outcome = undo_target(source, SPEC, mset, ALL, options(retry_attempts=3))
    finally:
        source.close()
    assert outcome.status == "failed"
    assert outcome.attempts == 1
    assert (outcome.error.kind, outcome.error.sqlstate, outcome.error.version) == ("sql", "42P01", "2")
    assert (outcome.from_version, outcome.to_version) == ("3", "2")
    with pg.connect() as conn:
        assert recorded_versions(conn) == ["1", "2"]
