"""Reads of the registry: filters, not-found errors, and soft-deleted connections never showing."""

from __future__ import annotations

import uuid

import pytest

from connections import selectors
from connections import services as registry
from connections.exceptions import ConnectionNotFound, TenantNotFound
from connections.models import TenantStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def registry_rows(pg):
    """Two regional shared databases (one inactive), a tenant of each status, and a deleted database's tenant."""
    us = registry.connection_create(actor="t", verify=False, **pg.connection_values(name="us", region="us-east"))
    eu = registry.connection_create(
        actor="t", verify=False, **pg.connection_values(name="eu", region="eu-west", is_active=False)
    )
    gone = registry.connection_create(actor="t", verify=False, **pg.connection_values(name="gone", region="us-east"))
    tenants = {
        "active_us": registry.tenant_create(slug="active_us", name="A", connection=us, actor="t"),
        "new_us": registry.tenant_create(
            slug="new_us", name="N", connection=us, actor="t", status=TenantStatus.PROVISIONING
        ),
        "active_eu": registry.tenant_create(slug="active_eu", name="E", connection=eu, actor="t"),
        "orphan": registry.tenant_create(slug="orphan", name="O", connection=gone, actor="t"),
    }
    registry.connection_delete(connection=gone, actor="t")
    return {"us": us, "eu": eu, "gone": gone, **tenants}


def slugs(queryset) -> set[str]:
    return set(queryset.values_list("slug", flat=True))


def test_tenant_list_narrows_by_status_region_and_connection_and_hides_deleted_connections(registry_rows):
    assert slugs(selectors.tenant_list()) == {"active_us", "new_us", "active_eu"}
    assert slugs(selectors.tenant_list(status=TenantStatus.PROVISIONING)) == {"new_us"}
    assert slugs(selectors.tenant_list(region="eu-west")) == {"active_eu"}
    assert slugs(selectors.tenant_list(connection=registry_rows["us"])) == {"active_us", "new_us"}
    assert slugs(selectors.tenant_list(status=TenantStatus.ACTIVE, region="us-east")) == {"active_us"}


def test_only_active_tenants_on_active_connections_are_targetable(registry_rows):
    assert slugs(selectors.tenant_list_targetable()) == {"active_us"}


def test_tenant_get_finds_a_tenant_and_refuses_one_on_a_deleted_connection(registry_rows):
    assert selectors.tenant_get(slug="active_eu").connection.name == "eu"
    for slug in ("orphan", "nobody"):
        with pytest.raises(TenantNotFound) as missing:
            selectors.tenant_get(slug=slug)
        assert missing.value.details == {"slug": slug}
        assert missing.value.status_code == 404


@pytest.mark.parametrize("connection_id", ["not-a-uuid", str(uuid.uuid4())], ids=["malformed", "unknown"])
def test_connection_get_answers_not_found_for_a_malformed_or_unknown_id(registry_rows, connection_id):
    with pytest.raises(ConnectionNotFound, match=f"No connection with id {connection_id}"):
        selectors.connection_get(connection_id=connection_id)


def test_a_deleted_connection_is_not_found_by_id_or_name(registry_rows):
    gone = registry_rows["gone"]
    with pytest.raises(ConnectionNotFound):
        selectors.connection_get(connection_id=gone.pk)
    with pytest.raises(ConnectionNotFound, match="No connection named 'gone'"):
        selectors.connection_get_by_name(name="gone")
    assert selectors.connection_get_by_name(name="us").pk == registry_rows["us"].pk


def test_connection_list_filters_combine(registry_rows):
    names = lambda qs: set(qs.values_list("name", flat=True))  # noqa: E731
    assert names(selectors.connection_list()) == {"us", "eu"}
    assert names(selectors.connection_list(region="us-east")) == {"us"}
    assert names(selectors.connection_list(is_active=False)) == {"eu"}
    assert names(selectors.connection_list(database_type="shared", names=["eu", "gone"])) == {"eu"}
