"""The /api/v1/databases/ and /api/v1/tenants/ endpoints against a real PostgreSQL."""

import pytest
from django.db import connection as control_db

from connections import selectors, services
from connections.models import DatabaseConnection, Tenant
from infra_site import crypto
from tests.support.postgres import REGISTRY_PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

URL = "/api/v1/databases/"


def body_of(response) -> str:
    return response.content.decode()


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def assert_no_password(response) -> None:
    """Neither the password nor a ``password`` field is in the response body."""
    assert REGISTRY_PASSWORD not in body_of(response)
    assert "not-the-password" not in body_of(response)
    if response.content:
        assert "password" not in _keys(response.json())


@pytest.fixture
def manager(api_as):
    return api_as("databases:manage")


def test_create_with_good_credentials_stores_version_and_response_time(manager, pg):
    response = manager.post(URL, pg.connection_values(), format="json")
    assert response.status_code == 201, response.json()
    assert_no_password(response)
    stored = DatabaseConnection.objects.get(pk=response.json()["id"])
    assert stored.server_version.startswith("PostgreSQL 16")
    assert stored.response_time_ms > 0
    assert stored.is_healthy is True
    assert stored.password == REGISTRY_PASSWORD
    assert stored.created_by == response.wsgi_request.user.username


@pytest.mark.parametrize(
    ("override", "cause"),
    [
        ({"password": "not-the-password"}, "authentication"),
        ({"database_name": "no_such_database"}, "database_missing"),
        ("closed_port", "refused"),
        ("silent_port", "timeout"),
    ],
)
def test_create_failure_causes_are_told_apart_and_nothing_is_stored(manager, pg, request, override, cause):
    if isinstance(override, str):
        override = {"port": request.getfixturevalue(override), "connect_timeout": 2}
    response = manager.post(URL, pg.connection_values(**override), format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "connection_test_failed"
    assert body["details"]["cause"] == cause
    assert body["message"]
    assert_no_password(response)
    assert DatabaseConnection.all_objects.count() == 0


def test_create_with_verify_false_registers_untested(manager, closed_port, pg):
    response = manager.post(URL, pg.connection_values(port=closed_port, verify=False), format="json")
    assert response.status_code == 201
    stored = DatabaseConnection.objects.get()
    assert stored.is_healthy is None
    assert stored.checked_at is None


def test_raw_password_column_holds_ciphertext_only(manager, pg):
    manager.post(URL, pg.connection_values(), format="json")
    with control_db.cursor() as cursor:
        cursor.execute("SELECT password FROM connections_databaseconnection")
        (raw,) = cursor.fetchone()
    raw = bytes(raw)
    assert REGISTRY_PASSWORD.encode() not in raw
    assert REGISTRY_PASSWORD not in raw.decode("latin-1")
    assert crypto.decrypt_with(raw, crypto.current_key()) == REGISTRY_PASSWORD


def test_create_refuses_a_taken_name_with_409(manager, pg):
    services.connection_create(actor="t", verify=False, **pg.connection_values(name="main"))
    response = manager.post(URL, pg.connection_values(name="main"), format="json")
    assert response.status_code == 409
    assert response.json()["error"] == "connection_name_taken"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 'x"; drop table users; --'),
        ("name", "Upper"),
        ("region", "US EAST"),
        ("default_schema", 'x"; drop schema public; --'),
        ("default_schema", "a$b"),
        ("default_schema", "user"),
        ("default_schema", "select"),
        ("database_type", "mainframe"),
        ("ssl_mode", "sometimes"),
        ("port", 70000),
        ("connect_timeout", 0),
    ],
)
def test_create_rejects_bad_fields_with_400_and_a_message(manager, pg, field, value):
    response = manager.post(URL, pg.connection_values(**{field: value}), format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "validation_error"
    assert field in body["details"]
    assert body["message"].startswith("Invalid input")
    assert DatabaseConnection.all_objects.count() == 0


def test_shared_database_needs_a_region(manager, pg):
    response = manager.post(URL, pg.connection_values(region=""), format="json")
    assert response.status_code == 400
    assert "region" in response.json()["details"]


@pytest.fixture
def stored(pg):
    return services.connection_create(actor="setup", **pg.connection_values(name="primary"))


def test_changing_connection_details_retests_and_keeps_the_row_on_failure(manager, stored, closed_port):
    response = manager.patch(f"{URL}{stored.pk}/", {"port": closed_port, "password": REGISTRY_PASSWORD}, format="json")
    assert response.status_code == 400
    assert response.json()["details"]["cause"] == "refused"
    stored.refresh_from_db()
    assert stored.port != closed_port
    response = manager.patch(f"{URL}{stored.pk}/", {"password": "wrong-one"}, format="json")
    assert response.status_code == 400
    assert response.json()["details"]["cause"] == "authentication"
    stored.refresh_from_db()
    assert stored.password == REGISTRY_PASSWORD


def test_blank_password_on_update_keeps_the_stored_one(manager, stored):
    response = manager.patch(f"{URL}{stored.pk}/", {"password": "", "region": "eu-west"}, format="json")
    assert response.status_code == 200, response.json()
    stored.refresh_from_db()
    assert stored.region == "eu-west"
    assert stored.password == REGISTRY_PASSWORD


def test_changing_only_metadata_does_not_retest(manager, stored, pg_server):
    before = stored.checked_at
    response = manager.patch(f"{URL}{stored.pk}/", {"is_active": False}, format="json")
    assert response.status_code == 200
    stored.refresh_from_db()
    assert stored.checked_at == before
    assert stored.is_active is False


def test_soft_delete_hides_the_connection_but_keeps_the_row(manager, stored):
    response = manager.delete(f"{URL}{stored.pk}/")
    assert response.status_code == 204
    assert manager.get(URL).json()["count"] == 0
    assert manager.get(f"{URL}{stored.pk}/").status_code == 404
    row = DatabaseConnection.all_objects.get(pk=stored.pk)
    assert row.deleted_at is not None
    assert row.deleted_by == response.wsgi_request.user.username


def test_tenants_of_a_soft_deleted_connection_are_not_targets(stored, pg):
    other = services.connection_create(actor="t", verify=False, **pg.connection_values(name="other"))
    services.tenant_create(slug="acme", name="Acme", connection=stored, actor="t")
    services.tenant_create(slug="globex", name="Globex", connection=other, actor="t")
    services.tenant_create(slug="initech", name="Initech", connection=other, actor="t", status="suspended")
    assert sorted(t.slug for t in selectors.tenant_list_targetable()) == ["acme", "globex"]
    services.connection_delete(connection=stored, actor="t")
    assert [t.slug for t in selectors.tenant_list_targetable()] == ["globex"]
    assert Tenant.objects.filter(slug="acme").exists()


def test_list_filters_and_paginates(manager, pg):
    for index, (kind, region) in enumerate([("shared", "us-east"), ("shared", "eu-west"), ("analytics", "")] * 2):
        services.connection_create(
            actor="t", verify=False, **pg.connection_values(name=f"c{index}", database_type=kind, region=region)
        )
    DatabaseConnection.objects.filter(name="c0").update(is_active=False)
    assert manager.get(URL).json()["count"] == 6
    assert manager.get(URL, {"region": "eu-west"}).json()["count"] == 2
    assert manager.get(URL, {"database_type": "analytics"}).json()["count"] == 2
    assert manager.get(URL, {"is_active": "false"}).json()["count"] == 1
    page = manager.get(URL, {"limit": 2, "offset": 2}).json()
    assert page["count"] == 6
    assert len(page["results"]) == 2
    assert page["next"]
    assert page["previous"]
    for bad in ("0", "101", "many"):
        response = manager.get(URL, {"limit": bad})
        assert response.status_code == 400
        assert response.json()["error"] == "validation_error"
    assert manager.get(URL, {"database_type": "mainframe"}).status_code == 400


def test_test_action_stores_the_snapshot_and_redacts(manager, stored, closed_port):
    response = manager.post(f"{URL}{stored.pk}/test/")
    assert response.status_code == 200
    assert response.json()["ok"] is True
    DatabaseConnection.objects.filter(pk=stored.pk).update(port=closed_port)
    response = manager.post(f"{URL}{stored.pk}/test/")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False
    assert body["cause"] == "refused"
    assert_no_password(response)
    stored.refresh_from_db()
    assert stored.is_healthy is False
    assert stored.error_cause == "refused"
    assert REGISTRY_PASSWORD not in stored.error


def test_password_never_in_list_or_detail(manager, stored):
    for response in (manager.get(URL), manager.get(f"{URL}{stored.pk}/")):
        assert response.status_code == 200
        assert_no_password(response)


def test_unknown_and_malformed_ids_are_json_404(manager):
    for path in (f"{URL}00000000-0000-0000-0000-000000000000/", f"{URL}not-a-uuid/", "/api/v1/nothing-here/"):
        response = manager.get(path)
        assert response.status_code == 404
        assert response.json()["error"] in ("not_found", "connection_not_found")


def test_malformed_json_is_a_400(manager):
    response = manager.post(URL, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"


class TestPermissions:
    def test_anonymous_gets_401(self, client):
        response = client.get(URL)
        assert response.status_code == 401
        assert response.json()["error"] == "not_authenticated"

    def test_wrong_basic_credentials_get_401(self, client, make_user):
        make_user("databases:read", username="reader")
        response = client.get(URL, HTTP_AUTHORIZATION="Basic cmVhZGVyOndyb25n")
        assert response.status_code == 401

    def test_without_databases_read_gets_403_naming_the_role(self, api_as):
        response = api_as("migrations:manage").get(URL)
        assert response.status_code == 403
        body = response.json()
        assert body["error"] == "permission_denied"
        assert "databases:read" in body["message"]
        assert body["details"]["required_role"] == "databases:read"

    def test_reader_can_list_but_not_create(self, api_as, pg):
        reader = api_as("databases:read")
        assert reader.get(URL).status_code == 200
        response = reader.post(URL, pg.connection_values(), format="json")
        assert response.status_code == 403
        assert "databases:manage" in response.json()["message"]
        assert DatabaseConnection.all_objects.count() == 0

    @pytest.mark.parametrize("role", ["databases:manage", "infrastructure:admin"])
    def test_manage_and_admin_can_create(self, api_as, pg, role):
        response = api_as(role).post(URL, pg.connection_values(verify=False), format="json")
        assert response.status_code == 201

    def test_basic_auth_with_a_local_account_works(self, client, make_user):
        make_user("databases:read", username="reader", password="s3cret-pass")
        response = client.get(URL, HTTP_AUTHORIZATION="Basic cmVhZGVyOnMzY3JldC1wYXNz")
        assert response.status_code == 200


TENANTS = "/api/v1/tenants/"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("slug", 'x"; drop schema public; --'),
        ("slug", "Acme"),
        ("slug", "a" * 49),
        ("schema_name", 'x"; drop schema public; --'),
        ("schema_name", "pg_catalog"),
        ("schema_name", "pg_toast"),
        ("schema_name", "information_schema"),
        ("schema_name", "s" * 64),
        ("schema_name", "é" * 32),
        ("schema_name", "public"),
        ("schema_name", "tenant$1"),
        ("schema_name", "t$$; drop table x; $$"),
        ("schema_name", "select"),
        ("schema_name", "user"),
    ],
)
def test_tenant_bad_identifiers_are_rejected_with_400(manager, stored, field, value):
    payload = {"slug": "acme", "name": "Acme", "connection": stored.name, field: value}
    response = manager.post(TENANTS, payload, format="json")
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["error"] == "validation_error"
    assert field in body["details"]
    assert body["message"]
    assert Tenant.objects.count() == 0


def test_tenant_is_created_with_the_default_schema(manager, stored):
    response = manager.post(TENANTS, {"slug": "acme", "name": "Acme", "connection": stored.name}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["schema_name"] == "tenant_acme"
    assert response.json()["region"] == "us-east"
    assert manager.get(f"{TENANTS}acme/").json()["slug"] == "acme"


def test_tenant_schema_of_63_bytes_is_accepted(manager, stored):
    name = "s" * 63
    payload = {"slug": "acme", "name": "Acme", "connection": stored.name, "schema_name": name}
    assert manager.post(TENANTS, payload, format="json").status_code == 201


def test_dedicated_tenant_database_may_use_public(manager, pg):
    dedicated = services.connection_create(
        actor="t", verify=False, **pg.connection_values(name="dedicated", database_type="tenant", region="")
    )
    response = manager.post(TENANTS, {"slug": "acme", "name": "Acme", "connection": dedicated.name}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["schema_name"] == "public"


def test_duplicate_tenant_is_a_409(manager, stored):
    payload = {"slug": "acme", "name": "Acme", "connection": stored.name}
    assert manager.post(TENANTS, payload, format="json").status_code == 201
    response = manager.post(TENANTS, {**payload, "slug": "acme2", "schema_name": "tenant_acme"}, format="json")
    assert response.status_code == 409
    assert manager.post(TENANTS, payload, format="json").status_code in (400, 409)


def test_a_tenant_cannot_take_the_default_schema_of_its_connection(manager, stored):
    assert manager.patch(f"{URL}{stored.pk}/", {"default_schema": "shared_data"}, format="json").status_code == 200
    payload = {"slug": "acme", "name": "Acme", "connection": stored.name, "schema_name": "shared_data"}
    response = manager.post(TENANTS, payload, format="json")
    assert response.status_code == 400, response.json()
    assert "schema_name" in response.json()["details"]
    assert manager.post(TENANTS, {**payload, "schema_name": "tenant_acme"}, format="json").status_code == 201
    response = manager.patch(f"{TENANTS}acme/", {"schema_name": "shared_data"}, format="json")
    assert response.status_code == 400
    assert "schema_name" in response.json()["details"]
    assert Tenant.objects.get(slug="acme").schema_name == "tenant_acme"


def test_a_connection_cannot_take_the_schema_of_one_of_its_tenants_as_default(manager, stored):
    services.tenant_create(slug="acme", name="Acme", connection=stored, actor="t")
    response = manager.patch(f"{URL}{stored.pk}/", {"default_schema": "tenant_acme"}, format="json")
    assert response.status_code == 400, response.json()
    assert "default_schema" in response.json()["details"]
    stored.refresh_from_db()
    assert stored.default_schema == "public"


def test_a_dedicated_tenant_database_keeps_public_as_default_and_tenant_schema(manager, pg):
    dedicated = services.connection_create(
        actor="t", verify=False, **pg.connection_values(name="dedicated", database_type="tenant", region="")
    )
    services.tenant_create(slug="acme", name="Acme", connection=dedicated, actor="t")
    response = manager.patch(f"{URL}{dedicated.pk}/", {"is_active": False}, format="json")
    assert response.status_code == 200, response.json()
