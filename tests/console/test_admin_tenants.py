"""Tenants in the admin: version and pending columns without a query per row, Migrate selected, suspend and
activate, and provisioning from the admin."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from connections.models import DatabaseConnection, Tenant, TenantStatus
from infra_site import roles
from migrations_runner.models import MigrationExecution, Origin
from tests.support.fleet import bulk_fleet, clear_bulk_fleet

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:connections_tenant_changelist")
PROVISION = reverse("admin:migrations_runner_provision_tenant")
RUN = reverse("admin:migrations_runner_migrationexecution_run")


def action(name: str, *tenants: Tenant) -> dict:
    return {"action": name, "_selected_action": [t.pk for t in tenants], "index": "0"}


def test_the_list_shows_each_tenants_version_and_pending_versions(admin_as):
    bulk_fleet(5)
    html = admin_as(roles.DATABASES_READ).get(CHANGELIST).content.decode()
    rows = {
        slug: html.split(f">{slug}</a>")[1].split("</tr>")[0]
        for slug in ("t00000", "t00001", "t00002", "t00003", "t00004")
    }
    assert '<td class="field-version_display">9</td><td class="field-pending_display">0</td>' in rows["t00000"]
    assert '<td class="field-version_display">5</td><td class="field-pending_display">4</td>' in rows["t00001"]
    assert '<td class="field-version_display">4</td><td class="field-pending_display">5</td>' in rows["t00003"]
    assert 'never</td><td class="field-pending_display">-</td>' in rows["t00004"]


def test_the_list_takes_no_query_per_row(admin_as):
    client = admin_as(roles.DATABASES_READ)
    bulk_fleet(10)
    with CaptureQueriesContext(db_connection) as small:
        assert client.get(CHANGELIST).status_code == 200
    clear_bulk_fleet()
    bulk_fleet(1000, history=2)
    with CaptureQueriesContext(db_connection) as large:
        assert client.get(CHANGELIST).status_code == 200
    assert len(large) == len(small)


def test_readers_see_neither_actions_nor_the_provision_button(admin_as):
    bulk_fleet(1)
    html = admin_as(roles.DATABASES_READ, roles.MIGRATIONS_READ).get(CHANGELIST).content.decode()
    assert 'name="action"' not in html
    assert PROVISION not in html


def test_an_executor_may_only_migrate(admin_as):
    bulk_fleet(1)
    html = admin_as(roles.DATABASES_READ, roles.MIGRATIONS_EXECUTE).get(CHANGELIST).content.decode()
    assert 'value="migrate_selected"' in html
    assert 'value="suspend_selected"' not in html
    assert PROVISION not in html


def test_migrate_selected_opens_the_run_form_with_the_tenants(admin_as):
    fleet = bulk_fleet(3)
    client = admin_as(roles.DATABASES_READ, roles.MIGRATIONS_EXECUTE)
    response = client.post(CHANGELIST, action("migrate_selected", fleet.tenants[2], fleet.tenants[0]))
    assert response.status_code == 302
    url = urlparse(response["Location"])
    assert url.path == RUN
    assert parse_qs(url.query) == {"scope": ["tenant"], "tenants": ["t00000", "t00002"]}


def test_migrate_selected_needs_the_execute_role(admin_as):
    fleet = bulk_fleet(1)
    response = admin_as(roles.DATABASES_MANAGE).post(CHANGELIST, action("migrate_selected", fleet.tenants[0]))
    assert response.status_code == 403


def test_suspend_and_activate_go_through_the_service_and_are_logged(admin_as):
    fleet = bulk_fleet(2)
    first, second = fleet.tenants
    client = admin_as(roles.DATABASES_MANAGE)
    client.post(CHANGELIST, action("suspend_selected", first, second))
    assert set(Tenant.objects.values_list("status", flat=True)) == {TenantStatus.SUSPENDED}
    client.post(CHANGELIST, action("activate_selected", first))
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (TenantStatus.ACTIVE, TenantStatus.SUSPENDED)
    entries = LogEntry.objects.filter(object_id=str(first.pk), action_flag=CHANGE).order_by("id")
    assert [e.change_message for e in entries] == ["Status active -> suspended.", "Status suspended -> active."]


def test_activate_leaves_a_provisioning_tenant_alone(admin_as):
    fleet = bulk_fleet(1)
    Tenant.objects.update(status=TenantStatus.PROVISIONING)
    response = admin_as(roles.DATABASES_MANAGE).post(
        CHANGELIST, action("activate_selected", fleet.tenants[0]), follow=True
    )
    assert "Left as they are (not suspended): t00000" in response.content.decode()
    assert Tenant.objects.get().status == TenantStatus.PROVISIONING


def test_forged_status_changes_of_a_reader_are_refused(admin_as):
    fleet = bulk_fleet(1)
    client = admin_as(roles.DATABASES_READ, roles.MIGRATIONS_MANAGE)
    for name in ("suspend_selected", "activate_selected"):
        assert client.post(CHANGELIST, action(name, fleet.tenants[0])).status_code == 403
    assert Tenant.objects.get().status == TenantStatus.ACTIVE
    assert not LogEntry.objects.exists()


def test_provisioning_needs_both_roles(admin_as, make_user, client):
    bulk_fleet(0)
    form = {"slug": "acme", "name": "Acme", "connection": DatabaseConnection.objects.get(name="shared-us").pk}
    for granted in ((roles.DATABASES_MANAGE,), (roles.MIGRATIONS_MANAGE, roles.DATABASES_READ)):
        client.force_login(make_user(*granted))
        assert client.get(PROVISION).status_code == 403
        assert client.post(PROVISION, form).status_code == 403
    assert not Tenant.objects.exists()
    assert MigrationExecution.objects.count() == 1  # bulk_fleet's own


def test_the_provision_button_shows_for_both_roles(admin_as):
    html = admin_as(roles.DATABASES_MANAGE, roles.MIGRATIONS_EXECUTE).get(CHANGELIST).content.decode()
    assert f'href="{PROVISION}"' in html


def test_provisioning_refuses_a_tenant_that_exists(admin_as):
    fleet = bulk_fleet(1)
    form = {"slug": "t00000", "name": "Again", "connection": fleet.connections["shared-us"].pk}
    response = admin_as(roles.DATABASES_MANAGE, roles.MIGRATIONS_EXECUTE).post(PROVISION, form)
    assert response.status_code == 400
    assert "exists and is active" in response.content.decode()
    assert MigrationExecution.objects.count() == 1  # bulk_fleet's own


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_provisioning_from_the_admin_runs_the_tenant_set_and_opens_the_progress_page(admin_as, small_fleet, settings):
    settings.MIGRATION_EXECUTOR = "inline"
    client = admin_as(roles.DATABASES_MANAGE, roles.MIGRATIONS_EXECUTE)
    assert client.get(PROVISION).status_code == 200
    form = {"slug": "acme", "name": "Acme", "connection": small_fleet.connections["shared-eu"].pk}
    response = client.post(PROVISION, form)
    execution = MigrationExecution.objects.get(metadata__provision="acme")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:migrations_runner_migrationexecution_progress", args=[execution.pk])
    assert execution.origin == Origin.ADMIN
    assert execution.status == "completed"
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.status == TenantStatus.ACTIVE
    entry = LogEntry.objects.get(object_id=str(tenant.pk))
    assert entry.action_flag == ADDITION
    assert entry.change_message == f"Provisioning: execution {execution.pk}."
