"""Execution errors name database hosts, ports and users only to holders of databases:read (as /health does)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connections.models import DatabaseConnection
from infra_site import roles
from migrations_runner import services
from migrations_runner.models import MigrationExecution, Origin, TargetRun, TargetStatus
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def failed(small_fleet, closed_port) -> MigrationExecution:
    """A dry run whose targets on an unreachable server failed with libpq's message (its address and port)."""
    DatabaseConnection.objects.filter(name="shared-eu").update(port=closed_port)
    execution = services.execution_start(
        selection=TargetSelection(connections=["shared-eu"]),
        options=ExecutionOptions(dry_run=True),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    MigrationExecution.objects.filter(pk=execution.pk).update(
        error=f'shared-eu unreachable: server "127.0.0.1", port {closed_port} as "registry_user"'
    )
    run = TargetRun.objects.filter(execution=execution, status=TargetStatus.FAILED).first()
    assert "127.0.0.1" in run.error["message"]
    assert str(closed_port) in run.error["message"]
    return execution


def secrets_in(text: str, port: int) -> list[str]:
    return [value for value in ("127.0.0.1", str(port), "registry_user") if value in text]


def test_a_migrations_reader_sees_errors_without_addresses_in_the_api(failed, api_as, closed_port):
    api = api_as(roles.MIGRATIONS_READ)
    targets = api.get(reverse("migrations-targets", args=[failed.pk])).json()["results"]
    messages = [t["error"]["message"] for t in targets if t["error"]]
    assert messages
    assert all("[hidden]" in m for m in messages)
    status = api.get(reverse("migrations-status", args=[failed.pk])).json()
    listed = api.get(reverse("migrations-list")).json()["results"][0]
    texts = [*messages, status["error"], status["error_message"], listed["error"]]
    assert not secrets_in(" ".join(texts), closed_port)


def test_a_databases_reader_sees_the_errors_as_stored(failed, api_as, closed_port):
    api = api_as(roles.MIGRATIONS_READ, roles.DATABASES_READ)
    targets = api.get(reverse("migrations-targets", args=[failed.pk])).json()["results"]
    assert any("127.0.0.1" in t["error"]["message"] for t in targets if t["error"])
    assert "registry_user" in api.get(reverse("migrations-status", args=[failed.pk])).json()["error"]


def test_the_plan_hides_the_address_of_an_unreachable_target(small_fleet, closed_port, api_as):
    DatabaseConnection.objects.filter(name="shared-eu").update(port=closed_port)
    body = {"scope": "all", "connections": ["shared-eu"]}
    rows = api_as(roles.MIGRATIONS_READ).post(reverse("migrations-plan"), body, format="json").json()["targets"]
    assert rows
    assert all(row["error"] and not secrets_in(row["error"], closed_port) for row in rows)
    rows = api_as(roles.DATABASES_READ, roles.MIGRATIONS_READ).post(reverse("migrations-plan"), body, format="json")
    assert all(str(closed_port) in row["error"] for row in rows.json()["targets"])


def test_the_admin_pages_of_an_execution_hide_addresses_from_a_migrations_reader(
    failed, client, make_user, closed_port
):
    pages = [
        reverse("admin:migrations_runner_migrationexecution_change", args=[failed.pk]),
        reverse("admin:migrations_runner_migrationexecution_progress_fragment", args=[failed.pk]),
    ]
    client.force_login(make_user(roles.MIGRATIONS_READ))
    for page in pages:
        html = client.get(page).content.decode()
        assert "[hidden]" in html
        assert not secrets_in(html, closed_port), page
    client.force_login(make_user(roles.MIGRATIONS_READ, roles.DATABASES_READ))
    assert "127.0.0.1" in client.get(pages[0]).content.decode()
