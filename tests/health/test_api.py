"""The health endpoints in process: liveness, the detailed report, one service, JSON metrics, the schema."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection as control
from django.db.migrations.recorder import MigrationRecorder
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from connections import services as registry
from health import probes, selectors
from health.models import CheckRun
from migrations_runner import services as migrations
from migrations_runner.models import Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from tests.support.postgres import REGISTRY_USER

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SERVICE_FIELDS = {"name", "is_healthy", "status", "response_time_ms", "checked_at", "live", "details"}


def service(body: dict, name: str) -> dict:
    return next(s for s in body["services"] if s["name"] == name)


def test_liveness_answers_version_and_environment_without_touching_the_database(anonymous):
    with CaptureQueriesContext(control) as queries:
        response = anonymous.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["environment"] == settings.ENVIRONMENT == "testing"
    assert body["version"] == "0.1.0"  # pyproject.toml's [project] version
    assert body["timestamp"]
    assert len(queries) == 0


def test_the_detailed_report_lists_every_service_with_a_summary(anonymous, pg):
    registry.connection_create(actor="t", **pg.connection_values(name="reachable"))
    response = anonymous.get("/health/detailed")
    assert response.status_code == 200
    body = response.json()
    names = [s["name"] for s in body["services"]]
    assert names == ["control_database", "task_queue", "broker", "oidc_provider", "migrations", "connection:reachable"]
    for entry in body["services"]:
        assert set(entry) == SERVICE_FIELDS
    assert service(body, "control_database")["is_healthy"]
    assert service(body, "connection:reachable")["is_healthy"]
    assert service(body, "connection:reachable")["response_time_ms"] > 0
    assert service(body, "oidc_provider")["status"] == "not_configured"
    assert service(body, "broker")["is_healthy"]
    assert service(body, "migrations")["is_healthy"]
    # No queue worker has run the periodic check: the queue is not being worked, so the system is degraded.
    assert not service(body, "task_queue")["is_healthy"]
    assert body["overall_status"] == "degraded"
    assert body["summary"] == {"total_services": 6, "healthy_services": 5, "unhealthy_services": 1}


def test_a_recent_check_run_by_a_worker_makes_the_task_queue_healthy(anonymous):
    now = timezone.now()
    CheckRun.objects.create(started_at=now, finished_at=now, worker="elsewhere:1")
    body = anonymous.get("/health/detailed").json()
    assert service(body, "task_queue")["is_healthy"]
    assert body["overall_status"] == "healthy"
    CheckRun.objects.update(finished_at=now - probes.worker_seen_within() - timedelta(seconds=1))
    assert not service(anonymous.get("/health/detailed").json(), "task_queue")["is_healthy"]


@pytest.mark.django_db(transaction=True)
def test_a_control_database_behind_the_code_is_unhealthy_and_says_to_migrate(anonymous, api_as):
    recorder = MigrationRecorder(control)
    app, name = sorted(probes._shipped_migrations())[0]
    recorder.record_unapplied(app, name)
    try:
        reader = api_as("databases:read")
        response = anonymous.get("/health/detailed")
        private = reader.get("/health/detailed")
    finally:
        recorder.record_applied(app, name)
    assert response.status_code == private.status_code == 503
    assert response.json()["error"] == "control_database_unavailable"
    database = service(private.json()["details"], "control_database")
    assert not database["is_healthy"]
    assert f"not migrated (behind: {app})" in database["details"]["error"]
    assert "manage.py migrate" in database["details"]["error"]
    assert anonymous.get("/health/detailed").status_code == 200


def test_a_stopped_database_makes_its_connection_unhealthy_and_the_system_degraded(api_as, own_server, pg, settings):
    settings.HEALTH_LIVE_PROBE_INTERVAL = 0
    caller = api_as()
    registry.connection_create(actor="t", **pg.connection_values(name="alive"))
    registry.connection_create(
        actor="t",
        name="stopped",
        database_type="analytics",
        host=own_server.host,
        port=own_server.port,
        database_name="postgres",
        username="postgres",
        password=own_server.password,
        ssl_mode="disable",
    )
    CheckRun.objects.create(started_at=timezone.now(), finished_at=timezone.now())
    assert caller.get("/health/detailed").json()["overall_status"] == "healthy"
    own_server.stop()
    response = caller.get("/health/detailed")
    assert response.status_code == 200
    body = response.json()
    assert body["overall_status"] == "degraded"
    assert not service(body, "connection:stopped")["is_healthy"]
    assert service(body, "connection:stopped")["status"] == "unhealthy"
    assert service(body, "connection:alive")["is_healthy"]
    assert body["summary"]["unhealthy_services"] == 1


def test_twenty_connections_with_five_silent_peers_answer_within_the_timeout(anonymous, api_as, pg, silent_port):
    for index in range(15):
        registry.connection_create(actor="t", verify=False, **pg.connection_values(name=f"ok-{index:02d}"))
    for index in range(5):
        registry.connection_create(
            actor="t",
            verify=False,
            **pg.connection_values(name=f"silent-{index}", port=silent_port, connect_timeout=30),
        )
    started = time.monotonic()
    response = api_as("infrastructure:admin").get("/health/detailed")
    elapsed = time.monotonic() - started
    print(f"/health/detailed with 20 connections, 5 of them silent: {elapsed:.2f} s")
    assert response.status_code == 200
    assert elapsed < 4, elapsed
    body = response.json()
    connections = [s for s in body["services"] if s["name"].startswith("connection:")]
    assert len(connections) == 20
    silent = [s for s in connections if s["name"].startswith("connection:silent-")]
    assert all(not s["is_healthy"] and s["details"]["cause"] == "timeout" for s in silent)
    assert all(s["is_healthy"] for s in connections if s not in silent)


def test_anonymous_callers_get_the_stored_results_and_no_silent_database_is_probed(
    anonymous, api_as, pg, silent_peer, settings
):
    settings.HEALTH_CHECK_TIMEOUT = 1.0
    stored = registry.connection_create(actor="t", **pg.connection_values(name="reachable"))
    registry.connection_create(
        actor="t", verify=False, **pg.connection_values(name="silent", port=silent_peer.port, connect_timeout=30)
    )
    bodies = [anonymous.get("/health/detailed").json() for _ in range(3)]
    bodies.append(anonymous.get("/health/services/connection:silent").json())
    # Nothing connected to the silent peer: a probe would have, and held the request for HEALTH_CHECK_TIMEOUT.
    assert silent_peer.connections_so_far() == 0
    for body in bodies[:3]:
        silent, reachable = service(body, "connection:silent"), service(body, "connection:reachable")
        assert (silent["live"], silent["status"], silent["checked_at"]) == (False, "unchecked", None)
        assert (reachable["live"], reachable["is_healthy"]) == (False, True)
        assert reachable["checked_at"] == stored.checked_at.isoformat().replace("+00:00", "Z")
        assert service(body, "control_database")["live"] is True
    assert (bodies[3]["live"], bodies[3]["status"]) == (False, "unchecked")

    caller = api_as()
    live = service(caller.get("/health/detailed").json(), "connection:silent")
    assert (live["live"], live["status"]) == (True, "unhealthy")
    # The next live probe of this caller waits HEALTH_LIVE_PROBE_INTERVAL: until then, the stored results.
    again = caller.get("/health/services/connection:silent").json()
    assert (again["live"], again["status"]) == (False, "unchecked")
    reader = api_as("databases:read").get("/health/services/connection:silent").json()
    assert (reader["live"], reader["details"]["cause"]) == (True, "timeout")
    assert silent_peer.connections_so_far() == 2


def test_anonymous_callers_get_no_addresses_versions_or_errors(anonymous, api_as, pg, closed_port):
    registry.connection_create(actor="t", **pg.connection_values(name="reachable"))
    registry.connection_create(actor="t", verify=False, **pg.connection_values(name="closed", port=closed_port))
    text = anonymous.get("/health/detailed").content.decode()
    body = json.loads(text)
    assert all(entry["details"] == {} for entry in body["services"])
    for secret in (pg.host, REGISTRY_USER, pg.dbname, "PostgreSQL 16", "refused", "Connection", "sqlite"):
        assert secret not in text
    one = anonymous.get("/health/services/connection:closed").json()
    assert one["details"] == {}
    assert not one["is_healthy"]

    admin = api_as("infrastructure:admin").get("/health/detailed").json()
    reachable = service(admin, "connection:reachable")["details"]
    assert reachable["host"] == pg.host
    assert reachable["port"] == pg.port
    assert reachable["user"] == REGISTRY_USER
    assert reachable["server_version"].startswith("PostgreSQL 16")
    refused = service(admin, "connection:closed")["details"]
    assert refused["cause"] == "refused"
    assert "refused" in refused["error"]
    assert service(admin, "control_database")["details"]["vendor"] == "sqlite3"
    reader = api_as("databases:read").get("/health/services/connection:closed").json()
    assert reader["details"]["cause"] == "refused"
    assert api_as("migrations:read").get("/health/services/connection:closed").json()["details"] == {}


def test_one_service_is_checked_by_name_and_an_unknown_name_is_404(anonymous, pg):
    registry.connection_create(actor="t", **pg.connection_values(name="reachable"))
    response = anonymous.get("/health/services/connection:reachable")
    assert response.status_code == 200
    assert response.json()["name"] == "connection:reachable"
    assert response.json()["is_healthy"] is True
    assert anonymous.get("/health/services/migrations").json()["name"] == "migrations"
    for unknown in ("nothing", "connection:nothing"):
        missing = anonymous.get(f"/health/services/{unknown}")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": "service_not_found",
            "message": f"No service named {unknown!r}.",
            "details": {"name": unknown},
        }


def test_the_migrations_service_is_the_migrations_health_report(api_as, settings, tmp_path):
    settings.MIGRATIONS_DIR = tmp_path
    (tmp_path / "tenant").mkdir()
    (tmp_path / "tenant" / "not-a-migration.sql").write_text("SELECT 1;")
    body = api_as("infrastructure:admin").get("/health/services/migrations").json()
    assert body["is_healthy"] is False
    assert any("malformed file name" in problem for problem in body["details"]["problems"])


def test_a_reachable_provider_is_healthy_and_its_answer_is_cached_briefly(api_as, settings):
    from tests.oidc_provider.launcher import APP_CLIENT_ID, APP_CLIENT_SECRET, REALM, app_client, running_provider

    probes._oidc_cache.clear()
    client = api_as("infrastructure:admin")
    with running_provider([app_client()], []) as provider:
        settings.KEYCLOAK_URL, settings.KEYCLOAK_ADMIN_REALM = provider.url, REALM
        settings.KEYCLOAK_CLIENT_ID, settings.KEYCLOAK_CLIENT_SECRET = APP_CLIENT_ID, APP_CLIENT_SECRET
        body = client.get("/health/services/oidc_provider").json()
        assert body["status"] == "healthy"
        assert body["details"]["issuer"] == provider.issuer()
        assert "cached" not in body["details"]
    # The provider is gone; for OIDC_CACHE_SECONDS the last answer stands, then the provider is asked again.
    body = client.get("/health/services/oidc_provider").json()
    assert body["status"] == "healthy"
    assert body["details"]["cached"] is True
    probes._oidc_cache.clear()
    body = client.get("/health/services/oidc_provider").json()
    assert body["status"] == "unhealthy"
    assert "discovery document could not be read" in body["details"]["error"]


def test_the_oidc_provider_is_checked_through_its_discovery_document(anonymous, settings, closed_port):
    settings.KEYCLOAK_URL = f"http://127.0.0.1:{closed_port}"
    settings.KEYCLOAK_CLIENT_ID = "infra"
    settings.KEYCLOAK_CLIENT_SECRET = "secret"
    probes._oidc_cache.clear()
    body = anonymous.get("/health/services/oidc_provider").json()
    assert body["status"] == "unhealthy"
    assert anonymous.get("/health/detailed").json()["overall_status"] == "degraded"


@pytest.mark.django_db(transaction=True)
def test_json_metrics_count_executions_runs_durations_connections_and_the_process(anonymous, small_fleet):
    migrations.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    body = anonymous.get("/health/metrics").json()
    assert body["executions"] == {"by_status": {"completed": 1}, "total": 1}
    runs = body["target_runs_24h"]
    assert runs["by_status"] == {"succeeded": 6}
    assert runs["duration_ms"]["count"] == 6
    assert runs["duration_ms"]["mean"] > 0
    assert runs["duration_ms"]["p95"] >= runs["duration_ms"]["mean"] * 0.5
    assert body["queue"]["depth"] == 0
    assert body["connections"] == {"healthy": 0, "unhealthy": 0, "unchecked": 4}
    assert body["process"]["memory_rss_bytes"] > 10_000_000
    assert body["process"]["uptime_seconds"] > 0
    assert body["process"]["cpu_user_seconds"] > 0


@pytest.mark.django_db(transaction=True)
def test_the_p95_is_the_nearest_rank_of_the_last_day(small_fleet):
    from migrations_runner.models import TargetRun

    migrations.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(),
        actor="test",
        origin=Origin.API,
        wait=True,
    )
    for index, run in enumerate(TargetRun.objects.order_by("id")):
        run.duration_ms = (index + 1) * 100  # 100 .. 600
        run.save(update_fields=["duration_ms"])
    figures = selectors.metrics_summary()["target_runs_24h"]["duration_ms"]
    assert figures == {"count": 6, "mean": 350.0, "p95": 600.0}


def test_the_endpoints_are_in_the_openapi_schema_with_their_shapes(api_as):
    schema = api_as().get("/api/v1/schema/?format=json").json()
    paths = schema["paths"]
    for path in ("/health/", "/health/detailed", "/health/services/{name}", "/health/metrics", "/metrics"):
        assert path in paths, path
    components = schema["components"]["schemas"]

    def response_schema(path: str, code: str) -> str:
        return paths[path]["get"]["responses"][code]["content"]["application/json"]["schema"]["$ref"].rsplit("/")[-1]

    detailed = components[response_schema("/health/detailed", "200")]
    assert set(detailed["properties"]) == {"overall_status", "timestamp", "services", "summary"}
    assert response_schema("/health/detailed", "503") == "Error"
    assert set(components["ServiceHealth"]["properties"]) == SERVICE_FIELDS
    assert set(components[response_schema("/health/", "200")]["properties"]) == {
        "status",
        "timestamp",
        "version",
        "environment",
    }
    assert "process" in components[response_schema("/health/metrics", "200")]["properties"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert response_schema("/health/services/{name}", "404") == "Error"
    assert not {"/health", "/health/detailed/", "/health/metrics/", "/health/services/{name}/", "/metrics/"} & set(
        paths
    )


def test_the_other_form_of_each_path_answers_too_without_a_redirect(anonymous):
    assert anonymous.get("/health").json()["status"] == "healthy"
    assert "overall_status" in anonymous.get("/health/detailed/").json()
    assert anonymous.get("/health/services/broker/").json()["name"] == "broker"
    assert anonymous.get("/health/metrics/").status_code == 200
    scraped = anonymous.get("/metrics/")
    assert scraped.status_code == 200
    assert "infra_control_database_up" in scraped.content.decode()


def test_the_schema_and_liveness_report_the_same_version(anonymous, api_as):
    schema = api_as().get("/api/v1/schema/?format=json").json()
    assert schema["info"]["version"] == anonymous.get("/health/").json()["version"] == "0.1.0"
