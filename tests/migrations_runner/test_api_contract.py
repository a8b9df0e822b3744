"""The API as a contract: paths without their trailing slash, 409 for the wrong state, both roles to provision,
schedules that keep every field, the seed's names as aliases, and list endpoints whose queries do not grow."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from migrations_runner import services
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_paths_without_the_trailing_slash_work_without_a_redirect(small_fleet, api_as, settings):
    settings.MIGRATION_EXECUTOR = "inline"
    client = api_as("migrations:execute")
    response = client.post(
        "/api/v1/migrations/execute", {"scope": "tenant", "tenants": ["us000"], "dry_run": True}, format="json"
    )
    assert response.status_code == 202, response.content
    execution_id = response.json()["id"]
    assert client.get(f"/api/v1/migrations/status/{execution_id}").status_code == 200
    assert client.get("/api/v1/migrations").status_code == 200
    assert client.get("/api/v1/migrations/").status_code == 200


def test_cancelling_a_finished_execution_is_a_409_with_the_reason(small_fleet, api_as, settings):
    settings.MIGRATION_EXECUTOR = "inline"
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    response = api_as("migrations:execute").post(f"/api/v1/migrations/{execution.pk}/cancel/")
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "execution_finished"
    assert "already completed" in body["message"]
    assert MigrationExecution.objects.get(pk=execution.pk).status == ExecutionStatus.COMPLETED


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (("databases:manage",), 403),
        (("migrations:execute",), 403),
        (("databases:manage", "migrations:execute"), 201),
    ],
)
def test_provisioning_needs_both_roles(small_fleet, api_as, settings, roles, expected):
    settings.MIGRATION_EXECUTOR = "inline"
    client = api_as(*roles, "databases:read")
    response = client.post(
        "/api/v1/tenants/provision/", {"slug": "newco", "name": "NewCo", "connection": "shared-us"}, format="json"
    )
    assert response.status_code == expected, response.content
    if expected == 403:
        assert response.json()["details"]["required_role"] in ("databases:manage", "migrations:execute")


def test_a_schedule_keeps_every_field(api_as, registered):
    client = api_as("migrations:manage")
    payload = {
        "name": "tenants-nightly",
        "scope": "tenant",
        "filters": {"regions": ["eu-west"], "connections": ["listed-eu"], "tenants": ["acme"]},
        "dry_run": True,
        "on_failure": "halt",
        "batch_size": 7,
        "cron_expression": "0 3 * * *",
        "enabled": True,
    }
    created = client.post("/api/v1/schedules/", payload, format="json")
    assert created.status_code == 201, created.content
    body = client.get(f"/api/v1/schedules/{created.json()['id']}/").json()
    for key, value in payload.items():
        assert body[key] == value, key
    assert "scope" not in body["filters"]


def test_the_seeds_names_are_accepted_as_aliases(small_fleet, api_as, settings):
    settings.MIGRATION_EXECUTOR = "inline"
    execution = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    MigrationExecution.objects.filter(pk=execution.pk).update(error="boom")
    body = api_as("migrations:read").get(f"/api/v1/migrations/status/{execution.pk}/").json()
    assert body["error_message"] == body["error"] == "boom"
    listed = api_as("databases:read").get("/api/v1/databases/", {"connection_type": "analytics"}).json()
    assert [row["name"] for row in listed["results"]] == ["analytics"]


def many_executions(connection, count: int, runs: int) -> None:
    for _ in range(count):
        execution = MigrationExecution.objects.create(
            scope="tenant", executed_by="bulk", status=ExecutionStatus.IN_PROGRESS, started_at=timezone.now()
        )
        TargetRun.objects.bulk_create(
            TargetRun(
                execution=execution,
                connection=connection,
                schema_name=f"tenant_{uuid.uuid4().hex[:12]}",
                database_type="tenant",
                status=TargetStatus.RUNNING if i % 3 == 0 else TargetStatus.PENDING,
            )
            for i in range(runs)
        )


@pytest.mark.parametrize("count", [3, 60])
def test_the_execution_list_runs_a_fixed_number_of_queries(small_fleet, api_as, django_assert_max_num_queries, count):
    many_executions(small_fleet.connections["shared-us"], count, runs=9)
    client = api_as("migrations:read")
    client.get("/api/v1/migrations/?limit=100")
    with django_assert_max_num_queries(8):
        response = client.get("/api/v1/migrations/?limit=100")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert len(rows) == count
    assert all(row["progress"]["running"] == 3 for row in rows)
