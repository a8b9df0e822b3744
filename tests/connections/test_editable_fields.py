"""A connection's editable fields are declared once (the services) and every interface takes them from there;
the services change models through one helper that refuses unknown names."""

from __future__ import annotations

import pytest
from django.contrib import admin

from connections import services
from connections.management.commands.add_connection import Command as AddConnection
from connections.models import DatabaseConnection, Tenant
from connections.serializers import DatabaseConnectionSerializer
from infra_site.errors import ValidationFailed
from infra_site.updates import model_update


def test_the_api_admin_and_command_take_the_services_list():
    serializer = DatabaseConnectionSerializer()
    writable = {name for name, field in serializer.fields.items() if not field.read_only}
    assert writable == {*services.EDITABLE_FIELDS, "verify"}
    model_admin = admin.site._registry[DatabaseConnection]
    in_fieldsets = [name for _, options in model_admin.fieldsets for name in options["fields"]]
    assert set(services.EDITABLE_FIELDS) <= set(in_fieldsets)
    assert set(services.EDITABLE_FIELDS) <= set(model_admin.form.base_fields)
    parser = AddConnection().create_parser("manage.py", "add_connection")
    destinations = {action.dest for action in parser._actions}
    assert set(services.EDITABLE_FIELDS) - {"is_active"} <= destinations


def test_model_update_sets_only_what_differs_and_refuses_unknown_names():
    tenant = Tenant(slug="acme", name="Acme", schema_name="tenant_acme")
    assert model_update(tenant, fields=services.TENANT_EDITABLE_FIELDS, changes={"name": "Acme", "status": "x"}) == [
        "status"
    ]
    assert tenant.status == "x"
    with pytest.raises(ValidationFailed) as refused:
        model_update(tenant, fields=services.TENANT_EDITABLE_FIELDS, changes={"slug": "other", "name": "Other"})
    assert refused.value.details == {"fields": ["slug"]}
    assert (tenant.slug, tenant.name) == ("acme", "Acme")  # nothing set when a name is refused


@pytest.mark.django_db
def test_the_services_refuse_fields_outside_the_declaration():
    with pytest.raises(ValidationFailed) as refused:
        services.connection_create(actor="t", verify=False, name="x", database_type="admin", created_by="me")
    assert refused.value.details == {"fields": ["created_by"]}
    assert not DatabaseConnection.all_objects.exists()
