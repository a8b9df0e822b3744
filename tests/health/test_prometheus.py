"""/metrics: the exposition parses, its counters follow work done by real queue workers, the token guards it."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from connections import services as registry
from migrations_runner import services as migrations
from migrations_runner.models import Origin, TargetStatus
from migrations_runner.options import ExecutionOptions, WaveOptions
from migrations_runner.selection import TargetSelection
from tests.support.waiting import wait_finished

pytestmark = [pytest.mark.postgres]


def scrape(client: APIClient | None = None, **headers: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = (client or APIClient()).get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum over every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, sample_labels), v in samples.items() if n == name and wanted <= set(sample_labels))


@pytest.mark.django_db(transaction=True)
def test_counters_and_histograms_follow_an_execution_run_by_a_real_qcluster(small_fleet, queue_settings, clusters):
    before = scrape()
    assert value(before, "infra_control_database_up") == 1
    cluster = clusters(workers=2)
    execution = migrations.execution_start(
        selection=TargetSelection(scope="tenant"), options=ExecutionOptions(), actor="test", origin=Origin.API
    )
    wait_finished(execution, timeout=120)
    assert execution.status == "completed"
    workers = {int(w.rsplit(":", 1)[1]) for w in execution.targets.values_list("worker", flat=True)}
    assert workers <= cluster.pids(), "the target runs were not worked by the qcluster"

    after = scrape()
    executions = ("infra_migration_executions_total", {"kind": "migrate", "status": "completed"})
    assert value(after, executions[0], **executions[1]) == value(before, executions[0], **executions[1]) + 1
    for region in ("us-east", "eu-west"):
        labels = {"status": TargetStatus.SUCCEEDED, "database_type": "tenant", "region": region}
        assert value(after, "infra_migration_target_runs_total", **labels) == (
            value(before, "infra_migration_target_runs_total", **labels) + 3
        )
        durations = {"database_type": "tenant", "region": region}
        assert value(after, "infra_migration_target_run_duration_seconds_count", **durations) == (
            value(before, "infra_migration_target_run_duration_seconds_count", **durations) + 3
        )
        assert value(after, "infra_migration_target_run_duration_seconds_bucket", **durations, le="+Inf") == (
            value(after, "infra_migration_target_run_duration_seconds_count", **durations)
        )
    completed = {"kind": "migrate", "status": "completed"}
    assert value(after, "infra_migration_execution_duration_seconds_count", **completed) == (
        value(before, "infra_migration_execution_duration_seconds_count", **completed) + 1
    )
    assert value(after, "infra_migration_execution_duration_seconds_sum", **completed) > 0
    scripts = value(after, "infra_migration_script_duration_seconds_count", database_type="tenant")
    # Every tenant run applied the 9 shipped tenant versions.
    assert scripts >= value(before, "infra_migration_script_duration_seconds_count", database_type="tenant") + 54
    assert value(after, "infra_migration_script_duration_seconds_sum", database_type="tenant") > 0
    assert value(after, "infra_task_queue_depth") == 0
    assert not any("tenant_slug" in dict(labels) or "us000" in str(labels) for _, labels in after)


@pytest.mark.django_db
def test_connection_health_and_probe_latency_come_from_the_latest_checks(pg, closed_port):
    registry.connection_create(actor="t", **pg.connection_values(name="up", region="us-east"))
    down = registry.connection_create(
        actor="t", verify=False, **pg.connection_values(name="down", region="us-east", port=closed_port)
    )
    registry.connection_create(actor="t", verify=False, **pg.connection_values(name="never", region="eu-west"))
    registry.connection_test(connection=down)
    samples = scrape()
    shared = {"database_type": "shared"}
    assert value(samples, "infra_connections", **shared, region="us-east", state="healthy") == 1
    assert value(samples, "infra_connections", **shared, region="us-east", state="unhealthy") == 1
    assert value(samples, "infra_connections", **shared, region="eu-west", state="unchecked") == 1
    assert value(samples, "infra_connection_probe_latency_seconds_bucket", **shared, region="us-east", le="+Inf") == 1
    assert value(samples, "infra_connection_probe_latency_seconds_gsum", **shared, region="us-east") > 0


@pytest.mark.django_db
def test_http_requests_are_counted_by_view_and_status():
    client = APIClient()
    before = scrape(client)
    for _ in range(3):
        client.get("/health/")
    client.get("/health/services/no-such-service")
    client.get("/no/such/page/")
    after = scrape(client)
    assert value(after, "infra_http_requests_total", view="health", method="GET", status="200") == (
        value(before, "infra_http_requests_total", view="health", method="GET", status="200") + 3
    )
    assert value(after, "infra_http_requests_total", view="health-service", method="GET", status="404") == (
        value(before, "infra_http_requests_total", view="health-service", method="GET", status="404") + 1
    )
    assert value(after, "infra_http_requests_total", view="unmatched", method="GET", status="404") >= 1
    assert total(after, "infra_http_request_duration_seconds_count", view="health") >= 3
    assert value(after, "process_resident_memory_bytes") > 0


@pytest.mark.django_db
def test_the_metrics_token_is_required_when_set(settings):
    settings.METRICS_TOKEN = "s3cret-token"
    client = APIClient()
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert missing.json()["error"] == "not_authenticated"
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-tokeX")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "authentication_failed"
    assert (
        "infra_control_database_up" in client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").content.decode()
    )
    # Prometheus sends Accept: application/openmetrics-text;... text/plain;...; the answer is the text format.
    scrape(client, HTTP_AUTHORIZATION="Bearer s3cret-token", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")


@pytest.mark.django_db
@pytest.mark.parametrize("environment", ["staging", "production"])
def test_without_a_token_metrics_are_closed_in_deployments(settings, environment):
    settings.METRICS_TOKEN = ""
    settings.ENVIRONMENT = environment
    settings.IS_DEPLOYED = True
    response = APIClient().get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"] == "metrics_closed"
    settings.IS_DEPLOYED = False
    settings.ENVIRONMENT = "development"
    assert APIClient().get("/metrics").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_executions_held_between_waves_are_counted_by_what_they_wait_for(small_fleet):
    assert value(scrape(), "infra_migration_executions_waiting", waiting="approval") == 0
    execution = migrations.execution_start(
        selection=TargetSelection(scope="tenant"),
        options=ExecutionOptions(waves=WaveOptions.parse(waves=["2"], approval=True)),
        actor="t",
        origin=Origin.API,
        wait=True,
    )
    samples = scrape()
    assert value(samples, "infra_migration_executions_waiting", waiting="approval") == 1
    assert value(samples, "infra_migration_executions_waiting", waiting="soak") == 0
    migrations.execution_abort(execution=execution, actor="t")
    assert value(scrape(), "infra_migration_executions_waiting", waiting="approval") == 0
