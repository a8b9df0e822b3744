"""The list serializers show each row from a plan of their fields made once (``PlannedRepresentation``): the
output is, field for field, what DRF's own ``to_representation`` gives, errors redacted alike, in any time zone.
And the executions' list reads only what it shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection as control_db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIRequestFactory
from rest_framework.utils.serializer_helpers import BindingDict

from connections import services as registry
from connections.models import Tenant
from migrations_runner import selectors
from migrations_runner import serializers as shapes
from migrations_runner.models import MigrationExecution, TargetRun
from migrations_runner.serializers import (
    ExecutionSerializer,
    PlannedRepresentation,
    RedactedCharField,
    TargetRunSerializer,
)

pytestmark = pytest.mark.django_db

HOST = "db-9.internal.example"


def shown(data) -> list:
    return json.loads(JSONRenderer().render(data))


@pytest.fixture
def fleet(make_user):
    target = registry.connection_create(
        actor="t", verify=False, name="shared-eu", database_type="shared", region="eu-west", host=HOST, port=6543,
        database_name="fleet", username="svc_fleet", password="pw-for-tests", ssl_mode="disable", connect_timeout=5,
    )  # fmt: skip
    tenant = Tenant.objects.create(slug="acme", name="Acme", connection=target)
    whole = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    first = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    executions = [first]
    for n in range(1, 12):
        executions.append(
            MigrationExecution.objects.create(
                scope=["tenant", "all", "shared"][n % 3],
                status=["completed", "failed", "in_progress", "cancelled"][n % 4],
                executed_by=f"user-{n} é",
                filters={"regions": ["eu-west"], "tenants": [], "connections": []} if n % 2 else {},
                dry_run=bool(n % 2),
                parent=first if n % 3 == 0 else None,
                cancel_requested=n % 5 == 0,
                error=f"could not connect to {HOST}:6543 as svc_fleet" if n % 4 == 1 else "",
                started_at=whole + timedelta(microseconds=n) if n % 2 else whole,
                completed_at=whole + timedelta(minutes=n) if n % 3 else None,
                failure_budget=["0", "2", "5%"][n % 3],
                wave_pause_s=n * 7,
                wave_approval=n % 2 == 0,
                waiting="waiting for a worker" if n == 5 else "",
                targets_total=n * 10,
                targets_succeeded=n,
                targets_failed=n % 3,
            )
        )
    runs = TargetRun.objects.bulk_create(
        TargetRun(
            execution=first,
            connection=target,
            tenant=tenant if n % 2 else None,
            schema_name=f"tenant_{n}",
            database_type="tenant",
            phase=n % 2,
            status=["succeeded", "failed", "pending"][n % 3],
            pending_versions=["2"] if n % 2 else [],
            applied_versions=[{"version": "1", "ratio": 1.5}] if n % 2 else [],
            error={"message": f"could not connect to {HOST}"} if n == 3 else None,
            retry_at=whole if n % 4 == 0 else None,
            started_at=whole - timedelta(microseconds=n),
            duration_ms=n or None,
        )
        for n in range(8)
    )
    return {"executions": executions, "runs": runs, "first": first}


def built_afresh(serializer):
    """``serializer`` with the fields DRF builds for it from the model now, not copies of its class's."""
    fields = BindingDict(serializer)
    for name, field in serializers.ModelSerializer.get_fields(serializer).items():
        fields[name] = field
    serializer.__dict__["fields"] = fields
    return serializer


def requests_for(make_user):
    for granted in (("migrations:read",), ("migrations:read", "databases:read")):
        request = APIRequestFactory().get("/")
        request.user = make_user(*granted)
        yield request


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/St_Johns"])
def test_executions_are_shown_as_drf_shows_them(fleet, make_user, zone):
    executions = list(selectors.execution_list().order_by("created_at"))
    running = selectors.executions_running(execution_ids=[e.pk for e in executions])
    for request in requests_for(make_user):
        context = {"request": request, "running": running}
        with timezone.override(zone):
            planned = shown(ExecutionSerializer(executions, many=True, context=context).data)
            reference = built_afresh(ExecutionSerializer(context=context))
            expected = shown([serializers.ModelSerializer.to_representation(reference, e) for e in executions])
        assert planned == expected
        assert len(planned) == 12
        redacted = [e["error"] for e in planned if e["error"]]
        assert redacted
        assert all((HOST in error) == (len(request.user.groups.all()) == 2) for error in redacted)
        if zone != "UTC":
            assert not any(e["started_at"].endswith("Z") for e in planned if e["started_at"])


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_target_runs_are_shown_as_drf_shows_them_from_instances_and_from_rows(fleet, make_user, zone):
    instances = list(selectors.execution_targets_listed(execution=fleet["first"]))
    rows = list(selectors.execution_target_rows(execution=fleet["first"]).values(*selectors.LISTED_ROW_FIELDS))
    for request in requests_for(make_user):
        context = {"request": request}
        with timezone.override(zone):
            from_instances = shown(TargetRunSerializer(instances, many=True, context=context).data)
            from_rows = shown(TargetRunSerializer(rows, many=True, context=context).data)
            reference = built_afresh(TargetRunSerializer(context=context))
            expected = shown([serializers.ModelSerializer.to_representation(reference, run) for run in instances])
        assert from_instances == expected
        assert from_rows == expected
        assert {run["tenant"] for run in expected} == {"acme", None}


def test_the_list_reads_no_metadata_and_the_status_shows_it(fleet, api_as):
    """The sets and options an execution ran with (kilobytes of JSON each) stay in the database for a list."""
    sets = {"tenant": {"versions": [{"version": str(n), "checksum": "c" * 64} for n in range(200)]}}
    MigrationExecution.objects.filter(pk=fleet["first"].pk).update(metadata={"sets": sets})
    reader = api_as("migrations:read")
    with CaptureQueriesContext(control_db) as captured:
        listed = reader.get("/api/v1/migrations/", {"limit": 100})
    assert listed.status_code == 200
    assert len(listed.json()["results"]) == 12
    assert all("metadata" not in execution for execution in listed.json()["results"])
    reads = [q["sql"] for q in captured.captured_queries if 'FROM "migrations_runner_migrationexecution"' in q["sql"]]
    assert reads
    assert not any('"metadata"' in sql for sql in reads), reads
    detail = reader.get(f"/api/v1/migrations/status/{fleet['first'].pk}/").json()
    assert detail["metadata"]["sets"] == sets


def test_fields_are_built_once_per_class_and_each_serializer_binds_its_own(fleet, make_user, monkeypatch):
    built = []
    build = serializers.ModelSerializer.get_fields
    monkeypatch.setattr(serializers.ModelSerializer, "get_fields", lambda self: built.append(type(self)) or build(self))
    monkeypatch.setattr(shapes, "_PROTOTYPES", {})
    failed = next(e for e in fleet["executions"] if e.error)
    reader, holder = requests_for(make_user)
    serializers_made = [ExecutionSerializer(context={"request": request}) for request in (reader, holder, reader)]
    shown_errors = [serializer.to_representation(failed)["error"] for serializer in serializers_made]
    assert built == [ExecutionSerializer]
    assert [HOST in error for error in shown_errors] == [False, True, False]
    fields = [serializer.fields for serializer in serializers_made]
    for name in fields[0]:
        assert len({id(of[name]) for of in fields}) == 3, name
        assert all(of[name].parent is serializer for of, serializer in zip(fields, serializers_made, strict=True))
    TargetRunSerializer(context={"request": reader}).fields  # noqa: B018 - builds them
    assert built == [ExecutionSerializer, TargetRunSerializer]


class _Errors(PlannedRepresentation):
    errors = serializers.ListField(child=RedactedCharField())


def test_a_field_holding_another_is_copied_in_depth(fleet, make_user):
    """A list's child is bound to the list: shared between serializers, it would show every error with the
    context of the one that bound it first."""
    reader, holder = requests_for(make_user)
    row = {"errors": [f"could not connect to {HOST}:6543"]}
    for order in ((reader, holder), (holder, reader)):
        made = [_Errors(context={"request": request}) for request in order]
        for serializer, request in zip(made, order, strict=True):
            assert serializer.fields["errors"].child.root is serializer
            (error,) = serializer.to_representation(row)["errors"]
            assert (HOST in error) == (request is holder)


@pytest.mark.parametrize(
    ("counters", "pending", "percentage"),
    [((16, 1, 0, 0, 0), 15, 6.2), ((3, 1, 1, 0, 0), 1, 66.7), ((0, 0, 0, 0, 0), 0, 100.0), ((8, 2, 3, 1, 2), 0, 100.0)],
)
def test_a_finished_execution_s_progress_is_its_counters(counters, pending, percentage):
    """What the list shows of a finished execution without a model instance (``finished_progress``), and what
    ``execution_progress`` gives of one: nothing running, waiting or left to estimate; Python's rounding (6.25
    shows as 6.2)."""
    total, succeeded, failed, skipped, cancelled = counters
    execution = MigrationExecution(
        status="failed", targets_total=total, targets_succeeded=succeeded, targets_failed=failed,
        targets_skipped=skipped, targets_cancelled=cancelled, runs_timed=1, run_duration_ms=10,
    )  # fmt: skip
    for progress in (
        selectors.execution_progress(execution=execution),
        selectors.finished_progress(
            total=total, succeeded=succeeded, failed=failed, skipped=skipped, cancelled=cancelled
        ),
    ):
        assert progress == selectors.Progress(
            total=total, completed=succeeded, failed=failed, skipped=skipped, cancelled=cancelled, running=0,
            pending=pending, current_targets=[], completion_percentage=percentage, estimated_completion=None,
            no_worker=False, state="finished",
        )  # fmt: skip
