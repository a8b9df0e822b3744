"""The periodic connection check: snapshots, the connection's health fields, pruning, its schedule, the admin trend."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.test import APIClient

from connections import services as registry
from connections.models import DatabaseConnection
from health import services
from health.models import CheckRun, ConnectionSnapshot
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.postgres]


@pytest.mark.django_db
def test_a_check_stores_a_snapshot_per_active_connection_and_updates_the_connection(pg, closed_port):
    up = registry.connection_create(actor="t", **pg.connection_values(name="up"))
    down = registry.connection_create(actor="t", verify=False, **pg.connection_values(name="down", port=closed_port))
    idle = registry.connection_create(actor="t", verify=False, **pg.connection_values(name="idle", is_active=False))
    run = services.connections_check()
    assert (run.connections_checked, run.connections_unhealthy) == (2, 1)
    assert run.worker.endswith(f":{os.getpid()}")
    snapshots = {s.connection.name: s for s in ConnectionSnapshot.objects.select_related("connection")}
    assert set(snapshots) == {"up", "down"}
    assert snapshots["up"].is_healthy
    assert snapshots["up"].response_time_ms > 0
    assert snapshots["up"].server_version.startswith("PostgreSQL 16")
    assert not snapshots["down"].is_healthy
    assert snapshots["down"].error_cause == "refused"
    assert "refused" in snapshots["down"].error
    down.refresh_from_db()
    up.refresh_from_db()
    assert down.is_healthy is False
    assert down.error_cause == "refused"
    assert down.checked_at == snapshots["down"].checked_at
    assert up.is_healthy is True
    assert DatabaseConnection.objects.get(pk=idle.pk).checked_at is None


@pytest.mark.django_db
def test_snapshots_and_runs_older_than_the_retention_are_pruned(pg, settings):
    settings.HEALTH_SNAPSHOT_RETENTION_DAYS = 7
    connection = registry.connection_create(actor="t", verify=False, **pg.connection_values(name="kept"))
    now = timezone.now()
    for age in (timedelta(days=9), timedelta(days=7, minutes=1), timedelta(days=6, hours=23), timedelta(minutes=5)):
        ConnectionSnapshot.objects.create(connection=connection, checked_at=now - age, is_healthy=True)
    CheckRun.objects.create(started_at=now - timedelta(days=8), finished_at=now - timedelta(days=8))
    assert services.snapshots_prune() == 2
    ages = sorted(now - s.checked_at for s in ConnectionSnapshot.objects.all())
    assert ages == [timedelta(minutes=5), timedelta(days=6, hours=23)]
    assert not CheckRun.objects.exists()
    # The periodic check prunes as it goes.
    ConnectionSnapshot.objects.create(connection=connection, checked_at=now - timedelta(days=30), is_healthy=False)
    assert services.connections_check().snapshots_pruned == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("interval", "fields"),
    [
        (2, {"schedule_type": Schedule.CRON, "cron": "* * * * * */2", "minutes": None}),
        (60, {"schedule_type": Schedule.MINUTES, "cron": None, "minutes": 1}),
        (300, {"schedule_type": Schedule.MINUTES, "cron": None, "minutes": 5}),
    ],
)
def test_the_schedule_follows_the_interval_setting(settings, interval, fields):
    settings.HEALTH_CHECK_INTERVAL = interval
    services.ensure_health_schedule()
    schedule = Schedule.objects.get(name=services.CHECK_SCHEDULE)
    assert schedule.func == "health.tasks.check_connections"
    assert schedule.repeats == -1
    assert {key: getattr(schedule, key) for key in fields} == fields
    assert Schedule.objects.filter(name=services.CHECK_SCHEDULE).count() == 1


@pytest.mark.django_db(transaction=True)
def test_migrate_creates_the_schedule():
    # The test database was migrated (and flushed, which signals post_migrate again): the hook created it.
    assert Schedule.objects.filter(name=services.CHECK_SCHEDULE, func=services.CHECK_TASK).exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_qcluster_runs_the_check_on_schedule(pg, settings, clusters):
    connection = registry.connection_create(actor="t", **pg.connection_values(name="watched"))
    settings.HEALTH_CHECK_INTERVAL = 2
    services.ensure_health_schedule()
    cluster = clusters(workers=1)
    # django-q2's scheduler looks at the schedules about every 30 s. The check writes the snapshots, then its run
    # (two commits): the run is the end of it.
    wait_until(
        lambda: CheckRun.objects.exists() and ConnectionSnapshot.objects.filter(connection=connection).exists(),
        timeout=75,
        interval=0.5,
        message=lambda: f"no snapshot was written:\n{cluster.output()[-3000:]}",
    )
    run = CheckRun.objects.get()
    assert int(run.worker.rsplit(":", 1)[1]) in cluster.pids()
    snapshot = ConnectionSnapshot.objects.get(connection=connection)
    assert snapshot.is_healthy
    connection.refresh_from_db()
    assert connection.checked_at == snapshot.checked_at
    # A worker ran the check just now: the queue counts as worked.
    body = APIClient().get("/health/services/task_queue").json()
    assert body["is_healthy"] is True


@pytest.mark.django_db
def test_the_connection_admin_page_shows_the_latency_trend_and_the_last_failures(client, make_user, pg):
    connection = registry.connection_create(actor="t", **pg.connection_values(name="trended"))
    now = timezone.now()
    for minutes, latency in ((300, 4.0), (200, 9.5), (100, 6.0), (10, 5.0)):
        at = now - timedelta(minutes=minutes)
        ConnectionSnapshot.objects.create(
            connection=connection, checked_at=at, is_healthy=True, response_time_ms=latency
        )
    ConnectionSnapshot.objects.create(
        connection=connection,
        checked_at=now - timedelta(minutes=50),
        is_healthy=False,
        error_cause="timeout",
        error="connection timeout expired <script>",
    )
    ConnectionSnapshot.objects.create(
        connection=connection, checked_at=now - timedelta(days=2), is_healthy=False, error_cause="dns"
    )
    client.force_login(make_user("databases:read"))
    html = client.get(reverse("admin:connections_databaseconnection_change", args=[connection.pk])).content.decode()
    svg = re.search(r"<svg[^>]*health-sparkline.*?</svg>", html, re.S)
    assert svg, "no sparkline on the change page"
    points = re.search(r'<polyline points="([^"]+)"', svg.group(0)).group(1).split()
    assert len(points) == 4
    assert svg.group(0).count('stroke="#c62828"') == 1  # the failure of the last 24 h, not the one 2 days ago
    assert "5 checks, 1 failed; latency min 4.0 / median 5.5 / max 9.5 ms" in html
    assert "timeout: connection timeout expired &lt;script&gt;" in html
    assert "dns" not in html.split("Latest failures")[1].split("</ul>")[0]


@pytest.mark.django_db
def test_the_admin_page_says_when_there_is_no_check_yet(client, make_user, pg):
    connection = registry.connection_create(actor="t", verify=False, **pg.connection_values(name="fresh"))
    client.force_login(make_user("databases:read"))
    html = client.get(reverse("admin:connections_databaseconnection_change", args=[connection.pk])).content.decode()
    assert "No periodic check in the last 24 h." in html
