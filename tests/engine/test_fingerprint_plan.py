"""The catalog query of fingerprints looks a sequence's owning column up by its key whatever plan it gets.

Lanes prepare the query, so PostgreSQL may run a generic plan made on the catalogs' statistics of the moment.
While a fleet's schemas are being created those statistics lag behind, and a plan that joined the owning column
merge-joined all of ``pg_attribute`` for each sequence: 10-14 s a batch of 48 schemas at 10,000 tenants, in every
lane at once. Here the planner is pushed to that plan (generic, no nested loop or hash join to choose).
"""

from __future__ import annotations

import pytest
from psycopg import sql

from migrations_runner.engine import fingerprint
from tests.support.plans import plan_root, scans

pytestmark = pytest.mark.postgres


def test_a_sequence_owner_is_read_by_its_key_in_a_generic_plan_without_nested_loops(pg):
    schemas = [f"tenant_{n}" for n in range(3)]
    with pg.connect() as conn:
        conn.autocommit = True
        for schema in schemas:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(
                sql.SQL("CREATE TABLE {}.users (id serial PRIMARY KEY, name text)").format(sql.Identifier(schema))
            )
        expected = fingerprint.read_fingerprints(conn, schemas)
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET enable_nestloop = off")
        conn.execute("SET enable_hashjoin = off")
        query = fingerprint.CATALOG_QUERY.replace("%(schemas)s", "$1").replace("%(ignored)s", "$2")
        conn.execute("PREPARE catalog (text[], text[]) AS " + query)
        explain = sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE catalog({}, {})").format(
            sql.Literal(schemas), sql.Literal(list(fingerprint.IGNORED_TABLES))
        )
        (plan,) = conn.execute(explain).fetchone()
        owner_scans = scans(plan_root(plan), alias="oa")
        # Still the same fingerprints under these settings.
        assert fingerprint.read_fingerprints(conn, schemas) == expected
    assert owner_scans, "the query reads the owning column as oa"
    for scan in owner_scans:
        condition = scan.get("Index Cond", "")
        assert "attrelid" in condition, scan
        assert "attnum" in condition, scan
    assert all(found.objects["sequence:users_id_seq"]["owned_by"] == "users.id" for found in expected.values()), (
        expected
    )
