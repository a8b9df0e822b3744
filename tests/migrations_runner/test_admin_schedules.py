"""Schedules in the admin: the list, validation through the services, enable / disable / run now, permissions,
and the admin log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from infra_site import roles
from migrations_runner import services
from migrations_runner.models import MigrationExecution, MigrationSchedule, Origin
from migrations_runner.selection import TargetSelection
from migrations_runner.services.schedules import FIRE_TASK

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("registered")]

CHANGELIST = reverse("admin:migrations_runner_migrationschedule_changelist")
ADD = reverse("admin:migrations_runner_migrationschedule_add")


def fire_schedules():
    """The django-q2 schedules that fire migration schedules (not the periodic lost-target check)."""
    return Schedule.objects.filter(func=FIRE_TASK)


def change_url(schedule: MigrationSchedule) -> str:
    return reverse("admin:migrations_runner_migrationschedule_change", args=[schedule.pk])


@pytest.fixture
def nightly() -> MigrationSchedule:
    return services.schedule_create(
        actor="setup", name="nightly", selection=TargetSelection(scope="tenant"), cron_expression="0 3 * * *"
    )


def form_data(**overrides) -> dict:
    data = {
        "name": "weekday-tenants",
        "enabled": "on",
        "cron_expression": "30 2 * * 1-5",
        "run_at_0": "",
        "run_at_1": "",
        "scope": "tenant",
        "regions": "eu-west, us-east",
        "connections": "",
        "tenants": "",
        "on_failure": "continue",
        "batch_size": "",
    }
    data.update(overrides)
    return data


def action(name: str, *schedules: MigrationSchedule) -> dict:
    return {"action": name, "_selected_action": [s.pk for s in schedules], "index": "0"}


def test_list_shows_timing_scope_last_run_and_next_run(admin_as, nightly):
    once = services.schedule_create(
        actor="setup", name="once", selection=TargetSelection(scope="admin"), run_at=timezone.now() + timedelta(days=2)
    )
    execution = MigrationExecution.objects.create(
        scope="tenant", executed_by="schedule:nightly", status="failed", origin=Origin.SCHEDULE
    )
    MigrationSchedule.objects.filter(pk=nightly.pk).update(last_execution=execution)
    response = admin_as(roles.MIGRATIONS_READ).get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "0 3 * * *" in html
    assert f"once at {timezone.localtime(once.run_at):%Y-%m-%d %H:%M}" in html
    assert 'class="infra-badge infra-badge-bad">Failed<' in html
    assert reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk]) in html
    next_run = timezone.localtime(Schedule.objects.get(pk=nightly.q_schedule_id).next_run)
    assert f"{next_run:%Y-%m-%d %H:%M}" in html


def test_readers_see_no_add_button_and_no_actions(admin_as, nightly):
    client = admin_as(roles.MIGRATIONS_READ)
    html = client.get(CHANGELIST).content.decode()
    assert ADD not in html
    assert 'name="action"' not in html
    html = client.get(change_url(nightly)).content.decode()
    assert 'name="_save"' not in html
    assert "Delete" not in html
    assert "next_runs_display" in html or "Next runs" in html


def test_forged_posts_of_a_reader_are_refused_and_change_nothing(admin_as, nightly):
    client = admin_as(roles.MIGRATIONS_READ)
    for name in ("disable_selected", "run_now"):
        assert client.post(CHANGELIST, action(name, nightly)).status_code == 403
    assert client.post(ADD, form_data()).status_code == 403
    assert client.post(change_url(nightly), form_data(name="nightly", cron_expression="* * * * *")).status_code == 403
    delete = reverse("admin:migrations_runner_migrationschedule_delete", args=[nightly.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    nightly.refresh_from_db()
    assert nightly.enabled
    assert nightly.cron_expression == "0 3 * * *"
    assert MigrationSchedule.objects.count() == 1
    assert not MigrationExecution.objects.exists()
    assert not LogEntry.objects.exists()


def test_an_executor_cannot_manage_schedules(admin_as, nightly):
    client = admin_as(roles.MIGRATIONS_EXECUTE)
    assert client.post(CHANGELIST, action("disable_selected", nightly)).status_code == 403
    nightly.refresh_from_db()
    assert nightly.enabled


def test_an_invalid_cron_expression_is_refused_with_the_reason(admin_as):
    response = admin_as(roles.MIGRATIONS_MANAGE).post(ADD, form_data(cron_expression="61 * * * *"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "is not a valid cron expression" in html
    assert not MigrationSchedule.objects.exists()
    assert not fire_schedules().exists()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("cron_expression", "0 0 30 2 *", "&#x27;0 0 30 2 *&#x27; never fires: no date matches it."),
        ("cron_expression", "*/5 * * * * *", "has 6 fields; give 5: minute hour day month weekday."),
        ("regions", "eu-west, mars-north", "No connection is in region &#x27;mars-north&#x27;."),
        ("connections", "nowhere", "No connection named &#x27;nowhere&#x27;."),
        ("tenants", "acme, ghost", "No tenant with slug &#x27;ghost&#x27;."),
    ],
)
def test_the_services_refusals_are_errors_of_their_field(admin_as, field, value, error):
    response = admin_as(roles.MIGRATIONS_MANAGE).post(ADD, form_data(**{field: value}))
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert error in response.content.decode()
    assert not MigrationSchedule.objects.exists()
    assert not fire_schedules().exists()


def test_a_past_run_at_is_refused(admin_as):
    past = timezone.localtime() - timedelta(hours=1)
    data = form_data(cron_expression="", run_at_0=f"{past:%Y-%m-%d}", run_at_1=f"{past:%H:%M:%S}")
    html = admin_as(roles.MIGRATIONS_MANAGE).post(ADD, data).content.decode()
    assert "is in the past" in html
    assert not MigrationSchedule.objects.exists()


def test_neither_cron_nor_run_at_is_refused(admin_as):
    html = admin_as(roles.MIGRATIONS_MANAGE).post(ADD, form_data(cron_expression="")).content.decode()
    assert "Give either a cron expression or a run_at time" in html
    assert not MigrationSchedule.objects.exists()


def test_creating_goes_through_the_service_and_is_logged(admin_as):
    response = admin_as(roles.MIGRATIONS_MANAGE).post(ADD, form_data())
    assert response.status_code == 302
    schedule = MigrationSchedule.objects.get(name="weekday-tenants")
    assert schedule.filters == {"regions": ["eu-west", "us-east"], "connections": [], "tenants": []}
    assert schedule.q_schedule is not None
    assert schedule.q_schedule.cron == "30 2 * * 1-5"
    assert schedule.created_by.startswith("user-")
    entry = LogEntry.objects.get(object_id=str(schedule.pk))
    assert entry.action_flag == ADDITION
    assert entry.user.username == schedule.created_by


def test_the_change_page_shows_the_next_five_runs_and_edits_through_the_service(admin_as, nightly):
    client = admin_as(roles.MIGRATIONS_MANAGE)
    html = client.get(change_url(nightly)).content.decode()
    today = timezone.localtime()
    assert html.count(" 03:00 ") == 5
    assert f"{today:%Y}" in html
    response = client.post(change_url(nightly), form_data(name="nightly", cron_expression="15 4 * * *"))
    assert response.status_code == 302
    nightly.refresh_from_db()
    assert nightly.cron_expression == "15 4 * * *"
    assert Schedule.objects.get(pk=nightly.q_schedule_id).cron == "15 4 * * *"
    assert LogEntry.objects.get(object_id=str(nightly.pk)).action_flag == CHANGE


def test_renaming_onto_another_schedule_is_refused(admin_as, nightly):
    services.schedule_create(
        actor="setup", name="other", selection=TargetSelection(scope="all"), cron_expression="0 1 * * *"
    )
    html = admin_as(roles.MIGRATIONS_MANAGE).post(change_url(nightly), form_data(name="other")).content.decode()
    assert "A schedule named &#x27;other&#x27; exists." in html
    nightly.refresh_from_db()
    assert nightly.name == "nightly"


def test_disable_and_enable_actions_sync_the_queue_schedule_and_are_logged(admin_as, nightly):
    client = admin_as(roles.MIGRATIONS_MANAGE)
    assert client.post(CHANGELIST, action("disable_selected", nightly)).status_code == 302
    nightly.refresh_from_db()
    assert not nightly.enabled
    assert nightly.q_schedule_id is None
    assert not fire_schedules().exists()
    html = client.get(CHANGELIST).content.decode()
    assert "disabled" in html
    client.post(CHANGELIST, action("enable_selected", nightly))
    nightly.refresh_from_db()
    assert nightly.enabled
    assert Schedule.objects.filter(pk=nightly.q_schedule_id).exists()
    messages = list(LogEntry.objects.filter(object_id=str(nightly.pk)).values_list("change_message", flat=True))
    assert sorted(messages) == ["Disabled.", "Enabled."]


def test_deleting_removes_the_queue_schedule(admin_as, nightly):
    delete = reverse("admin:migrations_runner_migrationschedule_delete", args=[nightly.pk])
    assert admin_as(roles.MIGRATIONS_MANAGE).post(delete, {"post": "yes"}).status_code == 302
    assert not MigrationSchedule.objects.exists()
    assert not fire_schedules().exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_run_now_starts_an_execution_listed_on_the_change_page(admin_as, small_fleet):
    schedule = services.schedule_create(
        actor="setup", name="admin-now", selection=TargetSelection(scope="admin"), cron_expression="0 3 * * *"
    )
    client = admin_as(roles.MIGRATIONS_MANAGE)
    response = client.post(CHANGELIST, action("run_now", schedule), follow=True)
    assert response.status_code == 200
    execution = MigrationExecution.objects.get(executed_by="schedule:admin-now")
    assert execution.origin == Origin.SCHEDULE
    assert execution.targets_total == 1
    assert "started" in response.content.decode()
    schedule.refresh_from_db()
    assert schedule.last_execution_id == execution.pk
    entry = LogEntry.objects.get(object_id=str(schedule.pk))
    assert entry.change_message == f"Run now: execution {execution.pk}."
    html = client.get(change_url(schedule)).content.decode()
    assert reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk]) in html


def test_run_now_leaves_a_disabled_schedule_alone(admin_as, nightly):
    services.schedule_update(schedule=nightly, actor="setup", enabled=False)
    response = admin_as(roles.MIGRATIONS_MANAGE).post(CHANGELIST, action("run_now", nightly), follow=True)
    assert "is disabled" in response.content.decode()
    assert not MigrationExecution.objects.exists()
