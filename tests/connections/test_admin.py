"""The registry's admin pages: write-only password, health badge, test action and button, soft delete."""

import re
import secrets

import pytest
from django.urls import reverse

from connections import services
from connections.models import DatabaseConnection
from migrations_runner.models import MigrationExecution, TargetRun
from tests.support.debug import debug_page
from tests.support.postgres import REGISTRY_PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

CHANGELIST = reverse("admin:connections_databaseconnection_changelist")
ADD = reverse("admin:connections_databaseconnection_add")


def change_url(connection) -> str:
    return reverse("admin:connections_databaseconnection_change", args=[connection.pk])


@pytest.fixture
def stored(pg):
    return services.connection_create(actor="setup", **pg.connection_values(name="primary"))


TYPED = "Typed-" + secrets.token_hex(6)  # made here, so that no source line shown in a report holds it


def form_data(pg, **overrides) -> dict:
    values = pg.connection_values(
        name="from-admin", verify="on", is_active="on", default_schema="public", auth_methods="scram-sha-256"
    )
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def test_pages_never_contain_the_password(admin_as, stored):
    client = admin_as("databases:manage")
    for url in (CHANGELIST, ADD, change_url(stored)):
        response = client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert REGISTRY_PASSWORD not in html
    html = client.get(change_url(stored)).content.decode()
    password_input = re.search(r'<input[^>]*name="password"[^>]*>', html).group(0)
    assert "value=" not in password_input


def test_changelist_shows_the_health_badge_and_columns(admin_as, stored):
    html = admin_as("databases:read").get(CHANGELIST).content.decode()
    assert "primary" in html
    assert ">healthy<" in html
    assert "PostgreSQL 16" in html


def test_adding_with_good_credentials_stores_the_connection(admin_as, pg):
    response = admin_as("databases:manage").post(ADD, form_data(pg))
    assert response.status_code == 302, response.content.decode()[:2000]
    stored = DatabaseConnection.objects.get(name="from-admin")
    assert stored.password == REGISTRY_PASSWORD
    assert stored.is_healthy is True
    assert stored.server_version.startswith("PostgreSQL")


def test_adding_with_a_wrong_password_shows_the_cause_and_stores_nothing(admin_as, pg):
    response = admin_as("databases:manage").post(ADD, form_data(pg, password="not-the-password"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "authentication failed" in html
    assert "not-the-password" not in html
    assert DatabaseConnection.all_objects.count() == 0


def test_changing_with_a_blank_password_keeps_the_stored_one(admin_as, stored, pg):
    data = form_data(pg, name="primary", password="", region="eu-west")
    response = admin_as("databases:manage").post(change_url(stored), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    stored.refresh_from_db()
    assert stored.region == "eu-west"
    assert stored.password == REGISTRY_PASSWORD


def test_changing_the_port_to_a_closed_one_is_refused(admin_as, stored, pg, closed_port):
    response = admin_as("databases:manage").post(
        change_url(stored), form_data(pg, name="primary", password=pg.password, port=closed_port)
    )
    assert response.status_code == 200
    assert "refused" in response.content.decode()
    stored.refresh_from_db()
    assert stored.port == pg.port


def test_test_selected_action_updates_health(admin_as, stored, closed_port):
    DatabaseConnection.objects.filter(pk=stored.pk).update(port=closed_port)
    client = admin_as("databases:manage")
    response = client.post(CHANGELIST, {"action": "test_selected", "_selected_action": [str(stored.pk)]}, follow=True)
    assert response.status_code == 200
    stored.refresh_from_db()
    assert stored.is_healthy is False
    assert stored.error_cause == "refused"
    assert "primary" in response.content.decode()


def test_test_connection_button_on_the_change_page(admin_as, stored):
    DatabaseConnection.objects.filter(pk=stored.pk).update(is_healthy=None, response_time_ms=None)
    client = admin_as("databases:manage")
    assert 'id="test-connection"' in client.get(change_url(stored)).content.decode()
    url = reverse("admin:connections_databaseconnection_test", args=[stored.pk])
    assert client.get(url).status_code == 405
    response = client.post(url, follow=True)
    assert response.status_code == 200
    assert "healthy" in response.content.decode()
    stored.refresh_from_db()
    assert stored.is_healthy is True
    assert stored.response_time_ms > 0


def test_deleting_in_the_admin_is_soft(admin_as, stored):
    client = admin_as("databases:manage")
    delete_url = reverse("admin:connections_databaseconnection_delete", args=[stored.pk])
    assert client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not DatabaseConnection.objects.filter(pk=stored.pk).exists()
    assert DatabaseConnection.all_objects.get(pk=stored.pk).deleted_at is not None
    assert client.get(CHANGELIST).context["cl"].result_count == 0


def test_a_connection_with_tenants_and_target_runs_is_soft_deleted_in_the_admin(admin_as, stored):
    tenant = services.tenant_create(slug="acme", name="Acme", connection=stored, actor="setup")
    execution = MigrationExecution.objects.create(scope="tenant", executed_by="setup")
    TargetRun.objects.create(execution=execution, connection=stored, tenant=tenant, schema_name="tenant_acme")
    client = admin_as("databases:manage")
    delete_url = reverse("admin:connections_databaseconnection_delete", args=[stored.pk])
    confirmation = client.get(delete_url)
    assert confirmation.status_code == 200
    assert confirmation.context["protected"] == []
    assert client.post(delete_url, {"post": "yes"}).status_code == 302
    assert DatabaseConnection.all_objects.get(pk=stored.pk).deleted_at is not None
    assert TargetRun.objects.filter(connection_id=stored.pk).count() == 1
    tenant.refresh_from_db()
    assert tenant.connection_id == stored.pk


def test_the_delete_action_soft_deletes_connections_that_have_tenants(admin_as, stored):
    services.tenant_create(slug="acme", name="Acme", connection=stored, actor="setup")
    client = admin_as("databases:manage")
    selected = {"action": "delete_selected", "_selected_action": [str(stored.pk)]}
    assert client.post(CHANGELIST, selected).context["protected"] == []
    assert client.post(CHANGELIST, {**selected, "post": "yes"}).status_code == 302
    assert DatabaseConnection.all_objects.get(pk=stored.pk).deleted_at is not None


@pytest.mark.parametrize(
    ("granted", "action"),
    [
        ("databases:read", "test_selected"),
        ("databases:read", "delete_selected"),
        ("databases:manage", "adopt_flyway_selected"),
        ("databases:manage", "baseline_selected"),
    ],
)
def test_a_forged_action_without_its_role_is_forbidden(admin_as, stored, granted, action):
    client = admin_as(granted)
    response = client.post(CHANGELIST, {"action": action, "_selected_action": [str(stored.pk)], "post": "yes"})
    assert response.status_code == 403
    assert DatabaseConnection.objects.filter(pk=stored.pk).exists()


def test_reader_cannot_add_or_change(admin_as, stored, pg):
    client = admin_as("databases:read")
    assert client.get(ADD).status_code == 403
    page = client.get(change_url(stored))
    assert page.status_code == 200
    assert 'id="test-connection"' not in page.content.decode()  # the button needs databases:manage
    assert client.post(change_url(stored), form_data(pg, name="renamed", password="")).status_code == 403
    stored.refresh_from_db()
    assert stored.name == "primary"


def test_user_without_roles_is_sent_to_login(admin_as):
    response = admin_as().get(CHANGELIST)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_tenant_admin_rejects_an_injection_schema(admin_as, stored):
    client = admin_as("databases:manage")
    add = reverse("admin:connections_tenant_add")
    data = {
        "slug": "acme",
        "name": "Acme",
        "connection": stored.pk,
        "schema_name": 'x"; drop schema public; --',
        "status": "active",
    }
    response = client.post(add, data)
    assert response.status_code == 200
    assert "not a valid identifier" in response.content.decode()
    data["schema_name"] = "tenant_acme"
    assert client.post(add, data).status_code == 302


def test_adding_a_taken_name_is_a_form_error_that_stores_nothing_and_hides_the_password(admin_as, stored, pg, settings):
    settings.DEBUG = True
    response = admin_as("databases:manage").post(ADD, form_data(pg, name="primary", password=TYPED))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"] == ["A connection named 'primary' already exists."]
    assert TYPED not in response.content.decode()
    assert DatabaseConnection.all_objects.count() == 1
    page = debug_page(response.wsgi_request)
    assert "a failure while serving the request" in page
    assert TYPED not in page


def test_renaming_to_a_taken_name_is_a_form_error_that_changes_nothing(admin_as, stored, pg, settings):
    settings.DEBUG = True
    other = services.connection_create(actor="setup", verify=False, **pg.connection_values(name="other"))
    response = admin_as("databases:manage").post(change_url(other), form_data(pg, name="primary", password=TYPED))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"] == ["A connection named 'primary' already exists."]
    other.refresh_from_db()
    assert other.name == "other"
    assert TYPED not in debug_page(response.wsgi_request)
