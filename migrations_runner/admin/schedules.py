"""Migration schedules in the admin: list, create and edit through the services, enable / disable / run now.

Reading needs ``migrations:read``; every change needs ``migrations:manage``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from croniter import CroniterBadDateError, croniter
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from infra_site import roles
from infra_site.admin_mixins import RoleAdminMixin
from infra_site.admin_site import ForbiddenActionMixin
from infra_site.errors import ApplicationError
from migrations_runner import selectors, services
from migrations_runner.exceptions import InvalidOptions, InvalidSchedule, InvalidSelection
from migrations_runner.forms import ExecutionOptionsForm
from migrations_runner.models import MigrationExecution, MigrationSchedule
from migrations_runner.options import OPTION_NAMES, ExecutionOptions
from migrations_runner.selection import FILTER_NAMES, TargetSelection
from migrations_runner.templatetags.fleet_admin import status_badge

NEXT_RUNS_SHOWN = 5
EXECUTIONS_SHOWN = 20


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


def _execution_link(execution: MigrationExecution) -> str:
    return format_html(
        '<a href="{}">{}</a> {}',
        reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk]),
        timezone.localtime(execution.created_at).strftime("%Y-%m-%d %H:%M"),
        status_badge(execution.status, execution.get_status_display()),
    )


def next_runs(schedule: MigrationSchedule, count: int = NEXT_RUNS_SHOWN) -> list[datetime]:
    """The next times a schedule fires (croniter for a cron expression; its ``run_at`` while in the future)."""
    if schedule.run_at:
        return [schedule.run_at] if schedule.run_at > timezone.now() else []
    if not schedule.cron_expression or not croniter.is_valid(schedule.cron_expression):
        return []
    times = croniter(schedule.cron_expression, timezone.localtime())
    try:
        return [times.get_next(datetime) for _ in range(count)]
    except CroniterBadDateError:  # stored before such expressions were refused
        return []


class MigrationScheduleForm(ExecutionOptionsForm, forms.ModelForm):
    """A schedule's fields, its filters as comma-separated lists, the options of the executions it starts (as on
    the Run migrations form); saved through the schedule services.

    ModelAdmin shows only the errors raised while the form validates, so the form saves through the service at
    the end of validation (``_post_clean``), and the service's refusals (an invalid cron expression, a past
    ``run_at``) become form errors. The admin's change view is atomic and writes nothing else.
    """

    regions = forms.CharField(required=False, help_text="Comma-separated; empty for every region.")
    connections = forms.CharField(required=False, help_text="Connection names, comma-separated.")
    tenants = forms.CharField(required=False, help_text="Tenant slugs, comma-separated.")

    actor = ""  # set per request by MigrationScheduleAdmin.get_form

    class Meta:
        model = MigrationSchedule
        fields = ["name", "enabled", "cron_expression", "run_at", "scope"]
        help_texts = {
            "cron_expression": "minute hour day month weekday, e.g. 0 3 * * 1-5. Leave empty for a one-off run_at.",
            "run_at": "A one-off run; leave empty for a cron schedule.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in FILTER_NAMES:
            if name in self.fields:
                self.fields[name].initial = ", ".join(self.instance.filters.get(name) or [])
        for name, value in self.initial_options(ExecutionOptions.from_dict(self.instance.options)).items():
            self.initial.setdefault(name, value)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        self._options = self.options_from(data)
        return data

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if MigrationSchedule.objects.filter(name=name).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(f"A schedule named {name!r} exists.")
        return name

    def values(self) -> dict[str, Any]:
        """The schedule's values for the services, its scope and filters as one ``selection``."""
        data = self.cleaned_data
        values: dict[str, Any] = {n: data[n] for n in ("name", "enabled", "cron_expression", "run_at") if n in data}
        values["cron_expression"] = (values.get("cron_expression") or "").strip()
        values["options"] = self._options
        filters = {
            name: [item.strip() for item in data.get(name, "").split(",") if item.strip()] for name in FILTER_NAMES
        }
        values["selection"] = TargetSelection(scope=data["scope"], **filters)
        return values

    def _post_clean(self) -> None:
        if self.errors:
            return
        try:
            if self.instance.pk:
                self.instance = services.schedule_update(schedule=self.instance, actor=self.actor, **self.values())
            else:
                self.instance = services.schedule_create(actor=self.actor, **self.values())
        except (InvalidSchedule, InvalidSelection, InvalidOptions) as exc:
            placed = False
            for field, problems in exc.details.items():
                if field in self.fields and isinstance(problems, list):
                    self.add_error(field, [str(problem) for problem in problems])
                    placed = True
            if not placed:
                self.add_error(None, exc.message)


@admin.register(MigrationSchedule)
class MigrationScheduleAdmin(ForbiddenActionMixin, RoleAdminMixin, admin.ModelAdmin):
    view_role = roles.MIGRATIONS_READ
    manage_role = roles.MIGRATIONS_MANAGE
    form = MigrationScheduleForm
    list_display = ["name", "timing", "selection", "enabled", "last_run", "next_run"]
    list_filter = ["enabled", "scope"]
    search_fields = ["name"]
    list_select_related = ["q_schedule", "last_execution"]
    actions = ["enable_selected", "disable_selected", "run_now"]
    readonly_fields = ["next_runs_display", "last_run", "last_fired_at", "started_executions", "created_by"]
    fieldsets = [
        (None, {"fields": ["name", "enabled"]}),
        ("When", {"fields": ["cron_expression", "run_at", "next_runs_display"]}),
        ("What", {"fields": ["scope", *FILTER_NAMES]}),
        ("How", {"fields": list(OPTION_NAMES)}),
        ("Runs", {"fields": ["last_run", "last_fired_at", "started_executions", "created_by"]}),
    ]

    class Media:
        css = {"all": ["migrations_runner/admin.css"]}

    # --- permissions ---

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, self.manage_role)

    # --- the list and the readonly fields ---

    @admin.display(description="When")
    def timing(self, obj: MigrationSchedule) -> str:
        if obj.run_at:
            return f"once at {timezone.localtime(obj.run_at):%Y-%m-%d %H:%M}"
        return format_html('<span class="infra-mono">{}</span>', obj.cron_expression)

    @admin.display(description="Scope")
    def selection(self, obj: MigrationSchedule) -> str:
        return obj.selection.describe() + ("; dry run" if obj.options.get("dry_run") else "")

    @admin.display(description="Last run", ordering="last_fired_at")
    def last_run(self, obj: MigrationSchedule) -> str:
        return _execution_link(obj.last_execution) if obj.last_execution else "-"

    @admin.display(description="Next run")
    def next_run(self, obj: MigrationSchedule) -> str:
        if not obj.enabled:
            return "disabled"
        when = obj.q_schedule.next_run if obj.q_schedule else next(iter(next_runs(obj, 1)), None)
        return f"{timezone.localtime(when):%Y-%m-%d %H:%M}" if when else "-"

    @admin.display(description="Next runs")
    def next_runs_display(self, obj: MigrationSchedule) -> str:
        times = next_runs(obj) if obj.enabled else []
        if not times:
            return "-"
        return format_html_join("", "<div>{}</div>", ((f"{timezone.localtime(t):%Y-%m-%d %H:%M %Z}",) for t in times))

    @admin.display(description=f"Executions started (latest {EXECUTIONS_SHOWN})")
    def started_executions(self, obj: MigrationSchedule) -> str:
        if not obj.pk:
            return "-"
        executions = selectors.schedule_executions(schedule=obj, limit=EXECUTIONS_SHOWN)
        return format_html_join("", "<div>{}</div>", ((_execution_link(e),) for e in executions)) or "none yet"

    @admin.display(description="Regions")
    def regions(self, obj: MigrationSchedule) -> str:
        return ", ".join(obj.filters.get("regions") or []) or "-"

    @admin.display(description="Connections")
    def connections(self, obj: MigrationSchedule) -> str:
        return ", ".join(obj.filters.get("connections") or []) or "-"

    @admin.display(description="Tenants")
    def tenants(self, obj: MigrationSchedule) -> str:
        return ", ".join(obj.filters.get("tenants") or []) or "-"

    # --- writes, all through the services ---

    def get_form(self, request: HttpRequest, obj: MigrationSchedule | None = None, change: bool = False, **kwargs):
        # A class made for this request by modelform_factory from ``form``: the actor is set on it, not on ours.
        form = cast(type[MigrationScheduleForm], super().get_form(request, obj, change, **kwargs))
        form.actor = _actor(request)
        return form

    def save_model(self, request: HttpRequest, obj: MigrationSchedule, form: MigrationScheduleForm, change: bool):
        """Nothing left to do: the form saved through the service while validating."""

    def delete_model(self, request: HttpRequest, obj: MigrationSchedule) -> None:
        services.schedule_delete(schedule=obj, actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[MigrationSchedule]) -> None:
        for schedule in queryset:
            services.schedule_delete(schedule=schedule, actor=_actor(request))

    @admin.action(description="Enable selected schedules", permissions=["manage"])
    def enable_selected(self, request: HttpRequest, queryset: QuerySet[MigrationSchedule]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected schedules", permissions=["manage"])
    def disable_selected(self, request: HttpRequest, queryset: QuerySet[MigrationSchedule]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[MigrationSchedule], enabled: bool) -> None:
        word = "enabled" if enabled else "disabled"
        done = []
        for schedule in queryset:
            if schedule.enabled == enabled:
                continue
            try:
                services.schedule_update(schedule=schedule, actor=_actor(request), enabled=enabled)
            except InvalidSchedule as exc:
                messages.error(request, f"{schedule.name}: {exc.message}")
                continue
            self.log_change(request, schedule, f"{word.capitalize()}.")
            done.append(schedule.name)
        if done:
            messages.success(request, f"{len(done)} schedule(s) {word}: {', '.join(done)}.")

    @admin.action(description="Run selected schedules now", permissions=["manage"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[MigrationSchedule]) -> None:
        for schedule in queryset:
            if not schedule.enabled:
                messages.warning(request, f"{schedule.name} is disabled: enable it to run it.")
                continue
            try:
                execution_id = services.schedule_fire(schedule_id=schedule.pk)
            except ApplicationError as exc:
                messages.error(request, f"{schedule.name}: {exc.message}")
                continue
            self.log_change(request, schedule, f"Run now: execution {execution_id}.")
            messages.success(
                request,
                format_html(
                    '{} started <a href="{}">execution {}</a>.',
                    schedule.name,
                    reverse("admin:migrations_runner_migrationexecution_progress", args=[execution_id]),
                    execution_id[:8],
                ),
            )
