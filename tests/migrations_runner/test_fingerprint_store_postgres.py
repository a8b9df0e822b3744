"""Storing a batch of fingerprints on a PostgreSQL control database: one statement, and the rows the ORM's three
statements stored before (new shapes added, known ones kept, each target's row inserted or updated in place).

The suite's own control database is SQLite, where the ORM path runs (``test_fingerprints.py``); this runs in a
child process on a PostgreSQL control database.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.support.control_child import run_control_child

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

CHILD = textwrap.dedent(
    """
    import datetime as dt
    import json

    from django.db import IntegrityError, connection

    from connections.models import Tenant
    from migrations_runner.models import MigrationExecution, SchemaFingerprint, SchemaShape
    from migrations_runner.services.fingerprints import _store, _Taken

    acme = Tenant.objects.create(slug="acme", name="Acme", connection=listed, schema_name="tenant_acme")
    execution = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    old_shape = {"table:t": {"kind": "table", "unlogged": False}, "column:t.id": {"type": "integer"}}
    new_shape = {"table:t": {"kind": "table", "unlogged": False}, "column:t.note": {"type": "text", "é": "ü"}}
    first_at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    later_at = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)

    def taken(schema, shape, *, tenant=None, version="1", execution_id=None):
        return _Taken(connection_id=str(listed.pk), schema=schema, tenant_id=tenant, database_type="tenant",
                      version=version, fingerprint=shape, execution_id=execution_id)

    with connection.execute_wrapper(seen):
        _store([taken("tenant_acme", "a" * 64, tenant=acme.pk), taken("tenant_b", "a" * 64)], {"a" * 64: old_shape},
               at=first_at)
    first_statements = list(statements)
    statements.clear()
    SchemaShape.objects.filter(pk="a" * 64).update(created_at=first_at)
    with connection.execute_wrapper(seen):
        # tenant_b twice in one batch: its last fingerprint stands; the known shape is sent again, and kept.
        _store(
            [
                taken("tenant_acme", "b" * 64, tenant=acme.pk, version="2", execution_id=execution.pk),
                taken("tenant_b", "a" * 64, version="2"),
                taken("tenant_b", "b" * 64, version="3", execution_id=execution.pk),
                taken("tenant_c", "a" * 64),
            ],
            {"a" * 64: {"changed": "never stored"}, "b" * 64: new_shape},
            at=later_at,
        )
    second_statements = list(statements)

    rows = {
        f.schema_name: [f.tenant_id, f.database_type, f.version, f.shape_id[:1], str(f.execution_id or ""),
                        f.taken_at.isoformat(), str(f.connection_id) == str(listed.pk)]
        for f in SchemaFingerprint.objects.all()
    }
    shapes = {s.pk[:1]: [s.definitions, s.created_at.isoformat()] for s in SchemaShape.objects.all()}
    try:
        _store([taken("tenant_d", "c" * 64)], {}, at=later_at)  # a shape that is neither stored nor sent
        refused = ""
    except IntegrityError as exc:
        refused = type(exc).__module__ + "." + type(exc).__name__
    print(json.dumps({
        "first": first_statements, "second": second_statements, "rows": rows, "shapes": shapes,
        "acme": acme.pk, "execution": str(execution.pk), "refused": refused,
        "after_refusal": SchemaFingerprint.objects.filter(schema_name="tenant_d").count(),
    }))
    """
)


def test_a_batch_of_fingerprints_is_stored_in_one_statement_on_postgresql(pg_control):
    out = run_control_child(CHILD, pg_control)

    assert out["first"] == ["WITH"]  # one statement: the shapes and the fingerprints
    assert out["second"] == ["WITH"]
    acme, execution = out["acme"], out["execution"]
    assert out["rows"] == {
        "tenant_acme": [acme, "tenant", "2", "b", execution, "2026-02-01T00:00:00+00:00", True],
        "tenant_b": [None, "tenant", "3", "b", execution, "2026-02-01T00:00:00+00:00", True],
        "tenant_c": [None, "tenant", "1", "a", "", "2026-02-01T00:00:00+00:00", True],
    }
    old_shape = {"table:t": {"kind": "table", "unlogged": False}, "column:t.id": {"type": "integer"}}
    new_shape = {"table:t": {"kind": "table", "unlogged": False}, "column:t.note": {"type": "text", "é": "ü"}}
    assert out["shapes"]["a"] == [old_shape, "2026-01-01T00:00:00+00:00"]  # stored once, never overwritten
    assert out["shapes"]["b"][0] == new_shape
    # A fingerprint whose shape is missing is refused by the foreign key, as the ORM's upsert was.
    assert out["refused"] == "django.db.utils.IntegrityError"
    assert out["after_refusal"] == 0
