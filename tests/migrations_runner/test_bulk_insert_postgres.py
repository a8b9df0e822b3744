"""``infra_site.bulk.bulk_insert`` on a PostgreSQL control database: the rows go in by ``COPY``, and are stored
exactly as ``bulk_create`` stores them.

The suite's own control database is SQLite (where ``bulk_insert`` sends ``INSERT``s, checked in
``test_bulk_insert.py``); this runs the same comparisons in a child process on a PostgreSQL control database.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.support.bulk import JSON_VALUES
from tests.support.control_child import run_control_child

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

CHILD = textwrap.dedent(
    """
    import datetime as dt
    import json

    from django.db import DataError, connection, transaction

    from infra_site.bulk import bulk_insert
    from migrations_runner.models import MigrationExecution, TargetRun
    from tests.support.bulk import JSON_VALUES, bulk_runs, stored_fields

    ours = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    theirs = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    with transaction.atomic(), connection.execute_wrapper(seen):
        bulk_insert(bulk_runs(ours, listed), batch_size=4)  # rows prepared in two batches, one COPY
    TargetRun.objects.bulk_create(bulk_runs(theirs, listed))

    odd = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    with transaction.atomic(), connection.execute_wrapper(seen):
        bulk_insert([
            TargetRun(execution=odd, connection=listed, schema_name=f"s{n}", database_type="tenant", error=value)
            for n, value in enumerate(JSON_VALUES)
        ])

    executions = [
        MigrationExecution(scope="tenant", executed_by="t", metadata={"n": n, "sets": {"tenant": [n]}})
        for n in range(3)
    ]
    before = dt.datetime.now(dt.UTC)
    with transaction.atomic(), connection.execute_wrapper(seen):
        bulk_insert(executions)
    stored = MigrationExecution.objects.in_bulk([e.pk for e in executions])

    # A value the table refuses: Django's error, and nothing of the rows before it stays.
    refused = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    runs = bulk_runs(refused, listed)
    runs[4].schema_name = "x" * 64  # one over the column's 63
    try:
        with transaction.atomic():
            bulk_insert(runs)
        raised = ""
    except DataError as exc:
        raised = type(exc).__module__ + "." + type(exc).__name__

    print(json.dumps({
        "ours": stored_fields(ours.targets.order_by("id")),
        "theirs": stored_fields(theirs.targets.order_by("id")),
        "order": list(ours.targets.order_by("id").values_list("schema_name", flat=True)),
        "json": [repr(r.error) for r in odd.targets.order_by("id")],
        "executions": [
            [stored[e.pk].metadata == e.metadata, stored[e.pk].created_at >= before - dt.timedelta(seconds=1)]
            for e in executions
        ],
        "statements": statements,
        "raised": raised,
        "refused_left": refused.targets.count(),
    }, default=str))
    """
)


def test_bulk_insert_copies_into_postgresql_what_bulk_create_stores(pg_control):
    out = run_control_child(CHILD, pg_control)

    assert out["order"] == [f"tenant_{n}" for n in range(6)]  # in insertion order
    assert out["ours"] == out["theirs"]
    assert out["ours"][3]["error"] == {"kind": "sql", "message": "é 3", "sqlstate": "42P01"}
    assert out["json"] == [repr(value) for value in JSON_VALUES]
    assert out["executions"] == [[True, True]] * 3  # a UUID key with its default, auto_now_add set
    # No row went as an INSERT statement (COPY does not go through Django's execute wrappers).
    assert "INSERT" not in out["statements"]
    assert out["raised"] == "django.db.utils.DataError"
    assert out["refused_left"] == 0
