"""One target selection for every interface: its validation, its stored form, and its resolution to targets."""

from __future__ import annotations

import sqlite3

import pytest
from django.core.management import CommandError, call_command
from django.db import connection as control

from connections.models import Tenant
from infra_site import roles
from migrations_runner import selectors, services
from migrations_runner.exceptions import InvalidSelection, NoTargets
from migrations_runner.models import MigrationExecution, MigrationSchedule, Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import MAX_FILTER_VALUES, TargetSelection


def test_filters_keep_their_order_without_repeats_and_a_bare_string_is_one_value():
    selection = TargetSelection(scope="tenant", regions="eu-west", tenants=["b", "a", "b"])
    assert selection.regions == ("eu-west",)
    assert selection.tenants == ("b", "a")
    assert selection.connections == ()
    assert selection.narrowed
    assert not TargetSelection().narrowed
    assert hash(selection) == hash(TargetSelection(scope="tenant", regions=["eu-west"], tenants=["b", "a"]))


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"scope": "everything"}, "scope"),
        ({"regions": ["EU West"]}, "regions"),
        ({"connections": ["shared us"]}, "connections"),
        ({"tenants": ["acme;drop"]}, "tenants"),
        ({"scope": "admin", "tenants": ["acme"]}, "tenants"),
        ({"scope": "regional", "tenants": ["acme"]}, "tenants"),
    ],
)
def test_an_invalid_selection_names_the_field(values, field):
    with pytest.raises(InvalidSelection) as refused:
        TargetSelection(**values)
    assert refused.value.status_code == 400
    assert list(refused.value.details) == [field]
    assert field in refused.value.message


@pytest.mark.parametrize("field", ["regions", "connections", "tenants"])
def test_each_filter_takes_a_bounded_number_of_values_and_the_refusal_names_it(field):
    bound = MAX_FILTER_VALUES[field]
    assert len(getattr(TargetSelection(**{field: [f"v{n}" for n in range(bound)]}), field)) == bound
    with pytest.raises(InvalidSelection) as refused:
        TargetSelection(**{field: [f"v{n}" for n in range(bound + 1)]})
    assert refused.value.code == "invalid_selection"
    assert refused.value.details == {field: [f"At most {bound} {field} may be named; got {bound + 1}."]}


@pytest.fixture
def classic_sqlite_limit(db):
    """The control database takes at most 999 parameters per query, as SQLite builds did before 3.32."""
    if control.vendor != "sqlite":
        pytest.skip("the limit is SQLite's")
    control.ensure_connection()
    limit = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
    before = control.connection.setlimit(limit, 999)
    yield
    control.connection.setlimit(limit, before)


def test_a_selection_at_every_bound_resolves_under_the_classic_sqlite_limit(registered, classic_sqlite_limit):
    listed = registered["listed-eu"]
    slugs = [f"t{n:05d}" for n in range(MAX_FILTER_VALUES["tenants"])]
    Tenant.objects.bulk_create(
        Tenant(slug=slug, name=slug, connection=listed, schema_name=f"tenant_{slug}") for slug in slugs
    )
    selection = TargetSelection(
        scope="tenant",
        regions=["eu-west", *(f"r{n}" for n in range(MAX_FILTER_VALUES["regions"] - 1))],
        connections=["listed-eu", *(f"c{n}" for n in range(MAX_FILTER_VALUES["connections"] - 1))],
        tenants=list(reversed(slugs)),
    )
    targets = selectors.targets_resolve(selection)
    assert [t.tenant_slug for t in targets] == slugs
    assert selectors.selection_unknown(selection) == {
        "regions": [f"No connection is in region 'r{n}'." for n in range(MAX_FILTER_VALUES["regions"] - 1)],
        "connections": [f"No connection named 'c{n}'." for n in range(MAX_FILTER_VALUES["connections"] - 1)],
    }


def test_the_stored_form_round_trips_and_ignores_other_keys():
    selection = TargetSelection(scope="tenant", regions=["us-east"], connections=["shared-us"], tenants=["acme"])
    stored = selection.as_filters()
    assert stored == {"regions": ["us-east"], "connections": ["shared-us"], "tenants": ["acme"]}
    assert TargetSelection.from_stored("tenant", {**stored, "schema": "x", "to_version": "3"}) == selection
    assert TargetSelection.from_stored("all", None) == TargetSelection()
    assert selection.replace(tenants=["globex"]).tenants == ("globex",)


def test_describe_says_the_scope_and_shortens_long_filters():
    tenants = [f"t{n}" for n in range(8)]
    assert TargetSelection().describe() == "All"
    assert (
        TargetSelection(scope="tenant", regions=["eu-west"], tenants=tenants).describe()
        == "Tenants; regions eu-west; tenants t0, t1, t2, t3, t4 and 3 more"
    )


@pytest.mark.postgres
@pytest.mark.django_db
def test_resolution_narrows_by_region_connection_and_tenant(small_fleet):
    every = selectors.targets_resolve(TargetSelection())
    assert len(every) == 4 + len(small_fleet.tenants)
    eu = selectors.targets_resolve(TargetSelection(regions=["eu-west"]))
    assert {t.connection_name for t in eu} == {"shared-eu"}
    assert len(eu) == 1 + len(small_fleet.tenants_in("eu-west"))
    tenants_on_us = selectors.targets_resolve(TargetSelection(scope="tenant", connections=["shared-us"]))
    assert {t.tenant_slug for t in tenants_on_us} == {t.slug for t in small_fleet.tenants_in("us-east")}
    one = small_fleet.tenants[0]
    (only,) = selectors.targets_resolve(TargetSelection(scope="single", tenants=[one.slug]))
    assert (only.tenant_slug, only.schema) == (one.slug, one.schema_name)
    with pytest.raises(NoTargets) as none:
        selectors.targets_resolve(TargetSelection(scope="tenant", regions=["eu-west"], connections=["shared-us"]))
    assert none.value.details["regions"] == ["eu-west"]


@pytest.mark.postgres
@pytest.mark.django_db
def test_executions_and_schedules_store_the_selection_they_were_given(small_fleet):
    selection = TargetSelection(scope="tenant", regions=["us-east"])
    execution = services.execution_start(
        selection=selection, options=ExecutionOptions(dry_run=True), actor="test", origin=Origin.API, wait=True
    )
    assert execution.selection == selection
    assert execution.targets.count() == len(small_fleet.tenants_in("us-east"))
    schedule = services.schedule_create(actor="t", name="us-nightly", selection=selection, cron_expression="0 3 * * *")
    assert MigrationSchedule.objects.get(pk=schedule.pk).selection == selection
    services.schedule_update(schedule=schedule, actor="t", selection=selection.replace(regions=["eu-west"]))
    assert MigrationSchedule.objects.get(pk=schedule.pk).filters["regions"] == ["eu-west"]


@pytest.mark.django_db
def test_the_api_refuses_an_invalid_selection_with_the_field_named(api_as):
    client = api_as(roles.MIGRATIONS_READ, roles.MIGRATIONS_EXECUTE, roles.MIGRATIONS_MANAGE)
    for path in ("/api/v1/migrations/execute/", "/api/v1/migrations/dynamic/plan/"):
        response = client.post(path, {"scope": "admin", "tenants": ["acme"]}, format="json")
        assert response.status_code == 400, path
        assert "tenants" in response.json()["details"]
    response = client.get("/api/v1/migrations/dynamic/status/", {"region": "Not A Region"})
    assert response.status_code == 400
    assert "regions" in response.json()["details"]
    schedule = {"name": "bad", "scope": "regional", "filters": {"tenants": ["acme"]}, "cron_expression": "0 3 * * *"}
    response = client.post("/api/v1/schedules/", schedule, format="json")
    assert response.status_code == 400
    assert "tenants" in response.json()["details"]
    assert not MigrationSchedule.objects.exists()
    assert not MigrationExecution.objects.exists()


@pytest.mark.django_db
def test_the_api_refuses_more_tenants_than_the_bound_naming_the_field(api_as):
    client = api_as(roles.MIGRATIONS_READ, roles.MIGRATIONS_EXECUTE)
    slugs = [f"t{n:06d}" for n in range(260_000)]
    for path in ("/api/v1/migrations/dynamic/plan/", "/api/v1/migrations/execute/"):
        response = client.post(path, {"scope": "tenant", "tenants": slugs}, format="json")
        assert response.status_code == 400, path
        body = response.json()
        assert set(body) == {"error", "message", "details"}
        assert body["details"] == {
            "tenants": [f"At most {MAX_FILTER_VALUES['tenants']} tenants may be named; got 260000."]
        }
    assert not MigrationExecution.objects.exists()


@pytest.mark.django_db
def test_a_partial_schedule_update_keeps_the_half_it_does_not_send(api_as, registered):
    client = api_as(roles.MIGRATIONS_READ, roles.MIGRATIONS_MANAGE)
    body = {"name": "eu", "scope": "tenant", "filters": {"regions": ["eu-west"]}, "cron_expression": "0 3 * * *"}
    created = client.post("/api/v1/schedules/", body, format="json").json()
    changed = client.patch(f"/api/v1/schedules/{created['id']}/", {"scope": "all"}, format="json").json()
    assert (changed["scope"], changed["filters"]["regions"]) == ("all", ["eu-west"])
    changed = client.patch(
        f"/api/v1/schedules/{created['id']}/", {"filters": {"tenants": ["acme"]}}, format="json"
    ).json()
    assert (changed["scope"], changed["filters"]) == ("all", {"regions": [], "connections": [], "tenants": ["acme"]})


@pytest.mark.django_db
def test_the_command_refuses_an_invalid_selection_before_planning():
    with pytest.raises(CommandError, match="tenants"):
        call_command("run_migrations", "--scope", "admin", "--tenant", "acme", "--dry-run")
    assert not MigrationExecution.objects.exists()
