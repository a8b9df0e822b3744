"""Rows for the tests of bulk inserts: target runs that cover what planning inserts, and how to compare them."""

from __future__ import annotations

import datetime as dt

from django.forms.models import model_to_dict

from migrations_runner.models import MigrationExecution, TargetRun

# JSON values that compare equal but encode differently (and one repeated).
JSON_VALUES = [[1], [True], [1.0], ["1"], [], {"n": 1}, {"n": True}, {"n": None}, {"n": 1}, [[1]], [[True]]]


def bulk_runs(execution: MigrationExecution, connection) -> list[TargetRun]:
    """Six new target runs of ``execution`` that cover what planning inserts: JSON lists shared by several rows and
    dicts, nulls, dates, phases and waves."""
    at = dt.datetime(2026, 12, 3, 6, 0, 1, 123000, tzinfo=dt.UTC)
    shared_pending = ["1", "2", "R__views.sql"]  # one list in several rows, as plans share them
    return [
        TargetRun(
            execution=execution,
            connection=connection,
            schema_name=f"tenant_{n}",
            database_type="tenant",
            region="eu-west",
            phase=n % 3,
            wave=None if n % 2 else n,
            status="succeeded" if n % 2 else "pending",
            from_version="1" if n else "",
            pending_versions=shared_pending if n % 2 == 0 else [],
            error={"kind": "sql", "message": f"é {n}", "sqlstate": "42P01"} if n == 3 else None,
            completed_at=at if n % 2 else None,
            duration_ms=n * 7 or None,
            server="127.0.0.1:5432",
        )
        for n in range(6)
    ]


def stored_fields(rows) -> list[dict]:
    """What the control database holds for ``rows``, field by field (not their keys)."""
    return [model_to_dict(row, exclude=["id", "execution"]) for row in rows]
