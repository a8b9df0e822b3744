"""The app served by gunicorn in child processes: a PostgreSQL control database that goes away and comes back,
HTTP metrics summed over several workers, and the task queue on a Redis broker with a real qcluster."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.qcluster import Cluster, RedisServer, child_env
from tests.support.tools import require_tool
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def service(body: dict, name: str) -> dict:
    return next(s for s in body["services"] if s["name"] == name)


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_a_stopped_control_database_answers_503_while_liveness_stays_up_and_it_recovers(own_server, serve):
    served = serve(child_env(ADMIN_DATABASE_URL=own_server.url("postgres")))
    migrate = served.manage("migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    served.start()
    healthy = served.get("/health/detailed")
    assert healthy.status_code == 200, served.output()[-3000:]
    assert service(healthy.json(), "control_database")["is_healthy"]
    # The exposition's aggregate queries (script durations: jsonb) run on PostgreSQL too.
    assert metric(served.get("/metrics").text, "infra_control_database_up") == 1

    own_server.stop()
    for _ in range(2):  # the pool's broken connections first, then no connection at all
        started = time.monotonic()
        down = served.get("/health/detailed")
        elapsed = time.monotonic() - started
        assert down.status_code == 503, down.text
        assert elapsed < 4, elapsed
        body = down.json()
        assert set(body) == {"error", "message", "details"}
        assert body["error"] == "control_database_unavailable"
        assert body["details"]["overall_status"] == "unhealthy"
        assert not service(body["details"], "control_database")["is_healthy"]
        assert all(entry["details"] == {} for entry in body["details"]["services"])
        liveness = served.get("/health/")
        assert liveness.status_code == 200
        assert liveness.json()["status"] == "healthy"
    started = time.monotonic()
    scraped = served.get("/metrics")
    assert time.monotonic() - started < 4
    assert metric(scraped.text, "infra_control_database_up") == 0
    assert metric(scraped.text, "infra_http_requests_total", view="health", status="200") == 2
    figures = served.get("/health/metrics")
    assert figures.status_code == 503
    assert figures.json()["error"] == "control_database_unavailable"

    own_server.start()
    recovered = wait_until(
        lambda: (r := served.get("/health/detailed")).status_code == 200 and r,
        timeout=90,
        message="/health/detailed did not recover after the control database came back",
    )
    assert service(recovered.json(), "control_database")["is_healthy"]


def test_http_metrics_of_several_workers_are_summed_in_multiprocess_mode(tmp_path, serve):
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = child_env(
        ADMIN_DATABASE_URL=f"sqlite:///{tmp_path / 'control.sqlite3'}", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
    )
    served = serve(env, workers=2)
    assert served.manage("migrate", "--noinput").returncode == 0
    served.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: served.get("/health/metrics"), range(40)))
    assert all(answer.status_code == 200 for answer in answers)
    pids = {answer.json()["process"]["pid"] for answer in answers}
    assert len(pids) == 2, "both gunicorn workers should have served some requests"
    for _ in range(4):  # whichever worker answers the scrape, it reports the requests of both
        scraped = served.get("/metrics").text
        assert metric(scraped, "infra_http_requests_total", view="health-metrics", status="200") == 40


def test_the_task_queue_on_redis_counts_live_clusters_and_the_broker_follows_redis(tmp_path, serve):
    require_tool("redis-server")
    redis = RedisServer().start()
    cluster = None
    try:
        env = child_env(ADMIN_DATABASE_URL=f"sqlite:///{tmp_path / 'control.sqlite3'}", Q_BROKER_URL=redis.url)
        served = serve(env)
        assert served.manage("migrate", "--noinput").returncode == 0
        served.start()
        before = served.get("/health/detailed").json()
        assert service(before, "broker")["is_healthy"]
        assert not service(before, "task_queue")["is_healthy"], "no cluster runs yet"
        cluster = Cluster(env, workers=1).start()
        wait_until(
            lambda: service(served.get("/health/detailed").json(), "task_queue")["is_healthy"],
            timeout=20,
            message="the running cluster was not seen",
        )
        cluster.stop()
        cluster = None
        wait_until(
            lambda: not service(served.get("/health/detailed").json(), "task_queue")["is_healthy"],
            timeout=20,
            message="the stopped cluster was still counted",
        )
        redis.stop()
        started = time.monotonic()
        down = served.get("/health/detailed")
        assert time.monotonic() - started < 4
        assert down.status_code == 200
        assert down.json()["overall_status"] == "degraded"
        assert not service(down.json(), "broker")["is_healthy"]
    finally:
        if cluster is not None:
            cluster.stop()
        redis.stop()


def test_a_control_database_that_is_not_migrated_answers_503_until_it_is(tmp_path, serve):
    control = tmp_path / "control.sqlite3"
    control.touch()
    served = serve(child_env(ADMIN_DATABASE_URL=f"sqlite:///{control}")).start()
    for path in ("/health/detailed", "/health/metrics", "/health/services/connection:primary"):
        response = served.get(path)
        assert response.status_code == 503, (path, response.text, served.output()[-3000:])
        body = response.json()
        assert set(body) == {"error", "message", "details"}
        assert body["error"] == "control_database_unavailable"
    details = served.get("/health/detailed").json()["details"]
    assert not service(details, "control_database")["is_healthy"]
    assert served.get("/health/").status_code == 200
    migrate = served.manage("migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    migrated = served.get("/health/detailed")
    assert migrated.status_code == 200, migrated.text
    assert service(migrated.json(), "control_database")["is_healthy"]
