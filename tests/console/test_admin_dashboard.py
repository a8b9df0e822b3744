"""The admin index as the fleet's dashboard: summary, latest executions, unhealthy connections, the no-worker
banner, each for the roles that may read them, in a fixed number of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connections.models import DatabaseConnection
from infra_site import roles
from migrations_runner.models import ExecutionStatus, MigrationExecution, TargetRun, TargetStatus
from tests.support.fleet import bulk_fleet, clear_bulk_fleet

pytestmark = pytest.mark.django_db

INDEX = reverse("admin:index")
FLEET = reverse("admin:migrations_runner_fleet")
SETS = reverse("admin:migrations_runner_sets")
RUN = reverse("admin:migrations_runner_migrationexecution_run")


@pytest.fixture
def admin_as(client, make_user):
    def login(*granted: str):
        client.force_login(make_user(*granted))
        return client

    return login


def in_progress(*, idle_for: timedelta, running: int = 0) -> MigrationExecution:
    """An execution of three targets in progress, whose lanes last showed life ``idle_for`` ago."""
    execution = MigrationExecution.objects.create(
        scope="admin",
        executed_by="tester",
        status=ExecutionStatus.IN_PROGRESS,
        targets_total=3,
        started_at=timezone.now() - idle_for,
        active_at=timezone.now() - idle_for,
    )
    connection = DatabaseConnection.objects.first()
    TargetRun.objects.bulk_create(
        TargetRun(
            execution=execution,
            connection=connection,
            schema_name=f"s{i}",
            database_type="admin",
            status=TargetStatus.RUNNING if i < running else TargetStatus.PENDING,
            # A run a worker holds has a lease it renews (its heartbeat).
            heartbeat_at=timezone.now() if i < running else None,
        )
        for i in range(3)
    )
    return execution


def test_a_reader_sees_the_fleet_summary_latest_executions_and_links_but_no_run_button(admin_as):
    bulk_fleet(10)
    response = admin_as(roles.MIGRATIONS_READ).get(INDEX)
    assert response.status_code == 200
    html = response.content.decode()
    summary = html.split('id="fleet-summary"')[1].split("</div>")[0]
    assert '?state=behind"><strong>3<' in summary
    assert '?state=up_to_date"><strong>5<' in summary
    assert '?state=drifted"><strong>2<' in summary
    assert '?state=failing"><strong>2<' in summary
    assert '?state=unknown"><strong>2<' in summary
    execution = MigrationExecution.objects.get()
    assert reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk]) in html
    assert 'class="infra-progress"' in html
    assert "14/14" in html
    assert f'href="{FLEET}"' in html
    assert f'href="{SETS}"' in html
    assert f'href="{RUN}"' not in html
    assert 'id="unhealthy-connections"' not in html  # needs databases:read
    assert 'id="no-worker-banner"' not in html
    assert 'class="app-migrations_runner module"' in html  # the app list is still there, with the fleet in it
    assert 'class="model-migrations_runner_fleet"' in html
    assert 'class="model-migrations_runner_sets"' in html


def test_an_executor_gets_the_run_button(admin_as):
    html = admin_as(roles.MIGRATIONS_EXECUTE).get(INDEX).content.decode()
    assert f'href="{RUN}"' in html


def test_a_database_reader_sees_unhealthy_connections_only(admin_as):
    bulk_fleet(1)
    html = admin_as(roles.DATABASES_READ).get(INDEX).content.decode()
    block = html.split('id="unhealthy-connections"')[1]
    assert "shared-eu" in block
    assert "shared-us" not in block.split("</table>")[0]
    assert 'id="fleet-summary"' not in html
    assert 'id="latest-executions"' not in html


def test_a_red_banner_warns_when_in_progress_work_waits_for_a_worker(admin_as, settings):
    bulk_fleet(1)
    waiting = in_progress(idle_for=timedelta(seconds=settings.MIGRATION_WORKER_WAIT + 60))
    html = admin_as(roles.MIGRATIONS_READ).get(INDEX).content.decode()
    banner = html.split('id="no-worker-banner"')[1].split("</div>")[0]
    assert "1 execution(s) in progress but no worker" in banner
    assert reverse("admin:migrations_runner_migrationexecution_progress", args=[waiting.pk]) in banner


def test_no_banner_while_a_worker_runs_a_target_or_before_the_wait_is_over(admin_as, settings):
    bulk_fleet(1)
    in_progress(idle_for=timedelta(seconds=settings.MIGRATION_WORKER_WAIT + 60), running=1)
    in_progress(idle_for=timedelta(seconds=1))
    html = admin_as(roles.MIGRATIONS_READ).get(INDEX).content.decode()
    assert 'id="no-worker-banner"' not in html
    assert "0/3 — 1 running" in html


def test_the_dashboard_queries_do_not_grow_with_the_fleet(admin_as, django_assert_max_num_queries):
    client = admin_as(roles.INFRASTRUCTURE_ADMIN)
    bulk_fleet(10)
    in_progress(idle_for=timedelta(hours=1))
    with CaptureQueriesContext(db_connection) as small:
        assert client.get(INDEX).status_code == 200
    clear_bulk_fleet()
    bulk_fleet(1000, history=12)
    for _ in range(5):
        in_progress(idle_for=timedelta(hours=1), running=1)
    with django_assert_max_num_queries(len(small)):
        assert client.get(INDEX).status_code == 200
    # Session and roles 3, executions 3 (latest, unfinished, running counts grouped), worker signals 2 (live
    # leases, waiting lanes), fleet counts 4, unhealthy connections 1, the admin's permissions 2 and its recent
    # actions 1.
    assert len(small) <= 16


def test_the_login_records_come_last_under_a_security_heading(admin_as):
    html = admin_as(roles.INFRASTRUCTURE_ADMIN).get(INDEX).content.decode()
    app_list = html.split('id="content-main"')[1]
    sections = [part.split('"')[0] for part in app_list.split('class="app-')[1:]]
    assert sections[-1] == "axes module"
    assert sections.index("axes module") > sections.index("migrations_runner module")
    security = app_list.split('class="app-axes module')[1]
    assert ">Security<" in security.split("</caption>")[0]
    assert ">Axes<" not in html


def test_the_dashboard_and_the_executions_list_show_dates_in_one_format(admin_as):
    created = timezone.now().replace(year=2026, month=3, day=4, hour=5, minute=6)
    MigrationExecution.objects.create(
        scope="admin", executed_by="tester", status=ExecutionStatus.COMPLETED, started_at=created
    )
    MigrationExecution.objects.update(created_at=created)
    client = admin_as(roles.MIGRATIONS_READ)
    dashboard = client.get(INDEX).content.decode()
    listed = client.get(reverse("admin:migrations_runner_migrationexecution_changelist")).content.decode()
    assert "2026-03-04 05:06" in dashboard.split('id="latest-executions"')[1]
    assert "2026-03-04 05:06" in listed.split('id="result_list"')[1]
    assert "March 4, 2026" not in listed
    assert "Mar. 4, 2026" not in listed
