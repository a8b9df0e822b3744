"""The control database's indexes on the target runs: none on a foreign key that a composite index leads with
(each index is written again with every status change of a run), and the migration that drops them keeps the
foreign keys themselves."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from django.db import connection

from migrations_runner.models import SchemaFingerprint, TargetRun
from tests.support.qcluster import ROOT, control_env

LED_BY_COMPOSITES = [
    (TargetRun, "execution_id", {"target_run_claim", "target_run_page", "target_run_unique"}),
    (TargetRun, "connection_id", {"target_run_latest"}),
    (SchemaFingerprint, "connection_id", {"schema_fingerprint_target"}),
]


def _indexes_on(constraints: dict, column: str) -> tuple[set[str], set[str]]:
    """The names of the single-column indexes of ``column`` and of the indexes (or unique constraints) that lead
    with it."""
    single = {n for n, c in constraints.items() if c["index"] and not c["unique"] and c["columns"] == [column]}
    leading = {n for n, c in constraints.items() if (c["index"] or c["unique"]) and c["columns"][:1] == [column]}
    return single, leading - single


@pytest.mark.django_db
@pytest.mark.parametrize(("model", "column", "composites"), LED_BY_COMPOSITES)
def test_no_single_column_index_where_a_composite_leads_with_the_column(model, column, composites):
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    single, leading = _indexes_on(constraints, column)
    assert single == set()
    assert composites <= leading


def _migrate(env: dict[str, str], target: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "migrations_runner", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _state(url: str) -> tuple[set[str], int]:
    """The single-column indexes on the three columns, and the count of foreign keys of the two tables."""
    with psycopg.connect(url) as conn:
        indexes = conn.execute(
            """
            SELECT i.relname FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
            WHERE x.indnatts = 1 AND NOT x.indisunique
              AND (t.relname, a.attname) IN (('migrations_runner_targetrun', 'execution_id'),
                                             ('migrations_runner_targetrun', 'connection_id'),
                                             ('migrations_runner_schemafingerprint', 'connection_id'))
            """
        ).fetchall()
        (foreign_keys,) = conn.execute(
            """
            SELECT count(*) FROM pg_constraint
            WHERE contype = 'f' AND conrelid IN ('migrations_runner_targetrun'::regclass,
                                                 'migrations_runner_schemafingerprint'::regclass)
            """
        ).fetchone()
    return {name for (name,) in indexes}, foreign_keys


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_the_migration_drops_the_indexes_on_postgresql_and_keeps_the_foreign_keys(pg_control):
    env = control_env(ADMIN_DATABASE_URL=pg_control)
    _migrate(env, "0015")
    before, foreign_keys = _state(pg_control)
    assert len(before) == 3
    _migrate(env, "0016")
    assert _state(pg_control) == (set(), foreign_keys)
    _migrate(env, "0015")  # and back
    after, foreign_keys_after = _state(pg_control)
    assert len(after) == 3
    assert foreign_keys_after == foreign_keys
