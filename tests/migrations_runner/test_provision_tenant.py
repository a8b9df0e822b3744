"""The provision_tenant command: register a tenant, create its schema, run the tenant set, exit 1 on failure."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from connections.models import Tenant, TenantStatus
from migrations_runner.models import MigrationExecution, Origin

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ALL_VERSIONS = [str(v) for v in range(1, 10)]


def provision(*args: str) -> str:
    out = StringIO()
    call_command("provision_tenant", *args, stdout=out)
    return out.getvalue()


def test_provisioning_creates_an_active_tenant_at_the_latest_version_and_prints_json(small_fleet):
    data = json.loads(provision("acme", "--connection", "shared-eu", "--json"))
    execution = MigrationExecution.objects.get()
    assert data == {
        "tenant": "acme",
        "status": "active",
        "schema": "tenant_acme",
        "version": "9",
        "error": None,
        "execution": str(execution.pk),
    }
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.status == TenantStatus.ACTIVE
    assert tenant.name == "acme"  # the slug when no name is given
    assert tenant.connection == small_fleet.connections["shared-eu"]
    assert execution.origin == Origin.COMMAND
    assert execution.executed_by.startswith("cli:")
    assert execution.metadata["provision"] == "acme"
    assert small_fleet.applied("shared-eu", "tenant_acme") == ALL_VERSIONS


def test_name_and_schema_are_taken_from_the_options_and_the_text_output_says_where(small_fleet):
    out = provision("globex", "--connection", "shared-us", "--name", "Globex Corp", "--schema", "globex_data")
    assert out.strip() == "Tenant globex: active, schema globex_data at version 9"
    tenant = Tenant.objects.get(slug="globex")
    assert (tenant.name, tenant.schema_name) == ("Globex Corp", "globex_data")
    assert small_fleet.applied("shared-us", "globex_data") == ALL_VERSIONS


def test_a_failing_version_exits_1_keeps_the_tenant_provisioning_and_a_rerun_resumes(small_fleet, sets_dir):
    v3 = sets_dir / "tenant" / "V3__create_tasks.sql"
    good = v3.read_text()
    v3.write_text(good + "\nSELECT no_such_column FROM tasks;\n")
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("provision_tenant", "newco", "--connection", "shared-us", stdout=out)
    assert failed.value.returncode == 1
    assert str(failed.value).startswith("Tenant newco is provisioning: version 3: ")
    assert "[SQLSTATE 42703]" in str(failed.value)
    assert out.getvalue().startswith("Tenant newco: provisioning, schema tenant_newco at version 2; error: version 3")
    assert Tenant.objects.get(slug="newco").status == TenantStatus.PROVISIONING
    assert small_fleet.applied("shared-us", "tenant_newco") == ["1", "2"]

    v3.write_text(good)
    data = json.loads(provision("newco", "--connection", "shared-us", "--json"))
    assert (data["status"], data["version"], data["error"]) == ("active", "9", None)
    assert small_fleet.applied("shared-us", "tenant_newco") == ALL_VERSIONS
    assert MigrationExecution.objects.count() == 2


def test_an_active_tenant_is_not_provisioned_again(small_fleet):
    existing = small_fleet.tenants[0]
    with pytest.raises(CommandError) as refused:
        provision(existing.slug, "--connection", "shared-us")
    assert f"Tenant {existing.slug!r} exists and is active" in str(refused.value)
    assert "status: active" in str(refused.value)  # the details follow the message
    assert not MigrationExecution.objects.exists()


def test_an_unknown_connection_is_a_clear_error_and_registers_nothing(small_fleet):
    with pytest.raises(CommandError, match="No connection named 'nowhere'"):
        provision("ghost", "--connection", "nowhere")
    assert not Tenant.objects.filter(slug="ghost").exists()


def test_the_connection_option_is_required(db):
    with pytest.raises(CommandError, match="--connection"):
        provision("acme")
