"""The /api/v1/migrations/ endpoints."""

import pytest
from django_q.models import Schedule

from migrations_runner.models import MigrationExecution, MigrationSchedule
from migrations_runner.services.schedules import FIRE_TASK

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BASE = "/api/v1/migrations/"


@pytest.fixture
def executor(api_as):
    return api_as("migrations:execute")


def test_execute_answers_202_and_the_execution_can_be_read(small_fleet, executor):
    response = executor.post(f"{BASE}execute/", {"scope": "tenant", "regions": ["eu-west"]}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["scope"] == "tenant"
    assert body["filters"]["regions"] == ["eu-west"]
    status = executor.get(f"{BASE}status/{body['id']}/").json()
    assert status["progress"]["total"] == 3
    assert status["executed_by"] == response.wsgi_request.user.username
    targets = executor.get(f"{BASE}{body['id']}/targets/").json()
    assert targets["count"] == 3
    assert {t["connection"] for t in targets["results"]} == {"shared-eu"}
    listing = executor.get(BASE, {"limit": 1}).json()
    assert listing["results"][0]["id"] == body["id"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"scope": "everything"}, "scope"),
        ({"scope": "tenant", "batch_size": 0}, "batch_size"),
        ({"scope": "tenant", "on_failure": "panic"}, "on_failure"),
        ({"scope": "tenant", "tenants": ['x"; drop schema public; --']}, "tenants"),
        ({"scope": "tenant", "regions": "us-east"}, "regions"),
    ],
)
def test_bad_execute_input_is_a_400_with_the_field(small_fleet, executor, payload, field):
    response = executor.post(f"{BASE}execute/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["details"]
    assert MigrationExecution.objects.count() == 0


def test_no_matching_target_is_a_400(small_fleet, executor):
    response = executor.post(f"{BASE}execute/", {"scope": "tenant", "tenants": ["nobody"]}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "no_targets"


def test_plan_and_fleet_status_change_nothing(small_fleet, api_as):
    reader = api_as("migrations:read")
    plan = reader.post(f"{BASE}dynamic/plan/", {"scope": "tenant", "tenants": ["us000"]}, format="json").json()
    assert plan["count"] == 1
    assert plan["targets"][0]["pending"][:3] == ["1", "2", "3"]
    fleet = reader.get(f"{BASE}dynamic/status/").json()
    assert fleet["count"] == 10
    assert fleet["behind"] == 10
    assert MigrationExecution.objects.count() == 0


def test_sets_and_health(api_as):
    reader = api_as("migrations:read")
    sets = {s["database_type"]: s for s in reader.get(f"{BASE}sets/").json()["sets"]}
    assert sets["tenant"]["latest"] == "9"
    assert all(v["undo"] for v in sets["tenant"]["versions"])
    health = reader.get(f"{BASE}health/")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"


def test_rollback_and_unknown_ids(small_fleet, executor):
    done = executor.post(f"{BASE}execute/", {"scope": "tenant"}, format="json").json()
    response = executor.post(f"{BASE}rollback/", {"execution_id": done["id"]}, format="json")
    assert response.status_code == 202
    assert response.json()["kind"] == "rollback"
    again = executor.post(f"{BASE}rollback/", {"execution_id": done["id"]}, format="json")
    assert again.status_code == 409
    missing = "00000000-0000-0000-0000-000000000000"
    assert executor.get(f"{BASE}status/{missing}/").status_code == 404
    assert executor.post(f"{BASE}rollback/", {"execution_id": "nope"}, format="json").status_code == 400
    assert executor.get(BASE, {"status": "weird"}).status_code == 400


def test_roles(small_fleet, api_as, client):
    assert client.get(BASE).status_code == 401
    reader = api_as("migrations:read")
    assert reader.get(BASE).status_code == 200
    response = reader.post(f"{BASE}execute/", {"scope": "tenant"}, format="json")
    assert response.status_code == 403
    assert "migrations:execute" in response.json()["message"]
    assert api_as("databases:manage").get(BASE).status_code == 403


def test_retry_endpoint_reruns_only_the_failed_targets(small_fleet, executor):
    from tests.support.fleet import create_owned_table

    victim = small_fleet.tenants[0]
    with small_fleet.connect("shared-us") as conn:
        create_owned_table(conn, victim.schema_name, "projects")
    first = executor.post(f"{BASE}execute/", {"scope": "tenant"}, format="json").json()
    assert first["status"] == "failed"
    with small_fleet.connect("shared-us") as conn:
        conn.execute(f"DROP TABLE {victim.schema_name}.projects")
    retry = executor.post(f"{BASE}{first['id']}/retry/")
    assert retry.status_code == 202
    body = retry.json()
    assert body["metadata"]["retry_of"] == first["id"]
    assert body["progress"]["total"] == 1
    assert body["status"] == "completed"
    assert executor.post(f"{BASE}{body['id']}/retry/").status_code == 409


def test_schedules_crud_and_validation(api_as, registered):
    manager = api_as("migrations:manage")
    bad = manager.post("/api/v1/schedules/", {"name": "x", "cron_expression": "every noon"}, format="json")
    assert bad.status_code == 400
    assert "cron_expression" in bad.json()["details"]
    past = manager.post("/api/v1/schedules/", {"name": "y", "run_at": "2001-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400
    assert "run_at" in past.json()["details"]
    created = manager.post(
        "/api/v1/schedules/",
        {"name": "nightly", "scope": "tenant", "cron_expression": "0 3 * * *", "filters": {"regions": ["us-east"]}},
        format="json",
    )
    assert created.status_code == 201, created.json()
    schedule_id = created.json()["id"]
    assert created.json()["filters"]["regions"] == ["us-east"]
    updated = manager.patch(f"/api/v1/schedules/{schedule_id}/", {"enabled": False}, format="json")
    assert updated.status_code == 200
    assert updated.json()["enabled"] is False
    assert api_as("migrations:execute").post("/api/v1/schedules/", {"name": "z"}, format="json").status_code == 403
    assert manager.delete(f"/api/v1/schedules/{schedule_id}/").status_code == 204
    assert manager.get(f"/api/v1/schedules/{schedule_id}/").status_code == 404


def test_provision_and_migrate_one_tenant(small_fleet, api_as):
    manager = api_as("databases:manage", "migrations:execute")
    response = manager.post(
        "/api/v1/tenants/provision/", {"slug": "newco", "name": "NewCo", "connection": "shared-eu"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["tenant"]["status"] == "active"
    migrate = manager.post("/api/v1/tenants/newco/migrate/")
    assert migrate.status_code == 202
    assert migrate.json()["scope"] == "single"
    assert manager.post("/api/v1/tenants/nobody/migrate/").status_code == 404


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 1 1 0#5", "*/10 * * * * *", "0 3 * * * 2030"])
def test_a_cron_expression_that_never_fires_or_has_six_fields_is_refused(api_as, cron):
    response = api_as("migrations:manage").post(
        "/api/v1/schedules/", {"name": "bad", "cron_expression": cron}, format="json"
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert list(body["details"]) == ["cron_expression"]
    assert not MigrationSchedule.objects.exists()
    assert not Schedule.objects.filter(func=FIRE_TASK).exists()


def test_a_schedule_naming_what_the_registry_does_not_hold_is_refused(api_as, registered):
    client = api_as("migrations:manage")
    known = {"regions": ["eu-west"], "connections": ["listed-eu"], "tenants": ["acme"]}
    body = {"name": "ghosts", "scope": "tenant", "cron_expression": "0 3 * * *"}
    unknown = {"regions": "mars-north", "connections": "nowhere", "tenants": "ghost"}
    filters = {name: [*values, unknown[name]] for name, values in known.items()}
    response = client.post("/api/v1/schedules/", {**body, "filters": filters}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["details"] == {
        "regions": ["No connection is in region 'mars-north'."],
        "connections": ["No connection named 'nowhere'."],
        "tenants": ["No tenant with slug 'ghost'."],
    }
    assert not MigrationSchedule.objects.exists()
    created = client.post("/api/v1/schedules/", {**body, "filters": known}, format="json")
    assert created.status_code == 201, created.content
    changed = client.patch(
        f"/api/v1/schedules/{created.json()['id']}/", {"filters": {"tenants": ["gone"]}}, format="json"
    )
    assert changed.status_code == 400
    assert changed.json()["details"] == {"tenants": ["No tenant with slug 'gone'."]}
    assert MigrationSchedule.objects.get().filters == known
