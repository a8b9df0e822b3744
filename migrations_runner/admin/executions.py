"""Executions in the admin: the list, the detail page, the Run flow (form, plan preview, confirm), the live progress
page, and Cancel / Retry failed / Roll back through confirmation pages. Every rule lives in the services and
selectors; these views only check the role, call one of them and shape the page."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import SimpleListFilter
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property

from infra_site import roles
from infra_site.errors import ApplicationError
from infra_site.keyset import LAST_PAGE, cursor_param
from migrations_runner import selectors, services
from migrations_runner.forms import RunForm
from migrations_runner.models import (
    ExecutionKind,
    ExecutionStatus,
    MigrationExecution,
    Origin,
    Scope,
    TargetRun,
    TargetStatus,
    Waiting,
)
from migrations_runner.templatetags.fleet_admin import progress_bar, status_badge

TARGETS_PER_PAGE = 50
PREVIEW_PER_PAGE = 100
LATEST_FAILURES = 10


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


def selection_in_words(execution: MigrationExecution) -> str:
    """``Tenants; regions eu-west; tenants acme, globex``: the scope and its filters."""
    return execution.selection.describe()


def kind_label(execution: MigrationExecution) -> str:
    if execution.kind == ExecutionKind.ROLLBACK:
        return "rollback"
    return "dry run" if execution.dry_run else "migrate"


def duration_or_eta(execution: MigrationExecution) -> str:
    """The duration of a finished execution, or its ETA (from its counters) while it runs."""
    if execution.is_finished:
        if execution.started_at and execution.completed_at:
            return _human(execution.completed_at - execution.started_at)
        return "-"
    eta = selectors.execution_eta(execution=execution)
    return f"ETA {_human(eta - timezone.now())}" if eta else "running"


def _human(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class KindFilter(SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("migrate", "Migrate"), ("dry_run", "Dry run"), ("rollback", "Rollback")]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "migrate":
            return queryset.filter(kind=ExecutionKind.MIGRATE, dry_run=False)
        if value == "dry_run":
            return queryset.filter(kind=ExecutionKind.MIGRATE, dry_run=True)
        if value == "rollback":
            return queryset.filter(kind=ExecutionKind.ROLLBACK)
        return queryset


class ScopeFilter(SimpleListFilter):
    """The scopes, the scope ``all`` named apart from the filter's own "All" (no filter)."""

    title = "scope"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        return [(value, "All targets" if value == Scope.ALL else label) for value, label in Scope.choices]

    def queryset(self, request, queryset):
        return queryset.filter(scope=self.value()) if self.value() else queryset


class ExecutionsPaginator(Paginator):
    """The changelist's pages; with no filter or search, the number of executions is the one a PostgreSQL control
    database keeps (``selectors.executions_count``) rather than counted for each page view."""

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is not None and not query.where:
            return selectors.executions_count()
        return super().count


@admin.register(MigrationExecution)
class MigrationExecutionAdmin(admin.ModelAdmin):
    """Executions are read-only here: they change only through Run, Cancel, Retry failed and Roll back."""

    list_display = [
        "short_id",
        "kind_display",
        "selection_display",
        "status_display",
        "progress_display",
        "started_at",
        "duration_display",
        "executed_by",
        "origin",
    ]
    list_filter = ["status", KindFilter, ScopeFilter, "origin", "executed_by", "created_at"]
    search_fields = ["id"]
    # No date_hierarchy: its links read the distinct days or months of every execution on each page view (a
    # third of a second at 10,000 executions on SQLite); the created_at filter selects dates without a query.
    list_per_page = 50
    show_full_result_count = False
    paginator = ExecutionsPaginator

    class Media:
        css = {"all": ["migrations_runner/admin.css"]}

    # --- permissions: the API's roles ---

    def has_module_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, roles.MIGRATIONS_READ)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return roles.has_role(request.user, roles.MIGRATIONS_READ)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_execute_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, roles.MIGRATIONS_EXECUTE)

    def _require_execute(self, request: HttpRequest) -> None:
        if not self.has_execute_permission(request):
            raise PermissionDenied(f"This needs the role {roles.MIGRATIONS_EXECUTE}.")

    # --- the list ---

    @admin.display(description="Id", ordering="created_at")
    def short_id(self, obj: MigrationExecution) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="Kind")
    def kind_display(self, obj: MigrationExecution) -> str:
        return kind_label(obj)

    @admin.display(description="Scope")
    def selection_display(self, obj: MigrationExecution) -> str:
        return selection_in_words(obj)

    @admin.display(description="Status", ordering="status")
    def status_display(self, obj: MigrationExecution) -> str:
        badge = status_badge(obj.status, obj.get_status_display())
        if obj.waiting == Waiting.APPROVAL and not obj.is_finished:
            return badge + status_badge("awaiting_approval")
        return badge

    @admin.display(description="Progress")
    def progress_display(self, obj: MigrationExecution) -> str:
        return progress_bar(obj)

    @admin.display(description="Duration / ETA")
    def duration_display(self, obj: MigrationExecution) -> str:
        return duration_or_eta(obj)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """Search by id (or its first characters) and by target: tenant slug, connection name or schema."""
        term = search_term.strip()
        if not term:
            return queryset, False
        by_id = Q()
        compact = term.replace("-", "").lower()
        if all(c in "0123456789abcdef" for c in compact) and compact:
            by_id = Q(pk=uuid.UUID(compact)) if len(compact) == 32 else Q(pk__startswith=term)
        targets = TargetRun.objects.filter(
            Q(tenant__slug__icontains=term) | Q(connection__name__icontains=term) | Q(schema_name__icontains=term)
        ).values("execution_id")
        return queryset.filter(by_id | Q(pk__in=targets)), False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra = {"can_run": self.has_execute_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    # --- the custom views ---

    def get_urls(self):
        def view(func, name):
            return path(
                func[0], self.admin_site.admin_view(func[1]), name=f"migrations_runner_migrationexecution_{name}"
            )

        return [
            view(("run/", self.run_view), "run"),
            view(("run/preview/", self.preview_view), "preview"),
            view(("run/confirm/", self.confirm_view), "confirm"),
            view(("<uuid:object_id>/progress/", self.progress_view), "progress"),
            view(("<uuid:object_id>/progress/fragment/", self.progress_fragment_view), "progress_fragment"),
            view(("<uuid:object_id>/cancel/", self.cancel_view), "cancel"),
            view(("<uuid:object_id>/retry/", self.retry_view), "retry"),
            view(("<uuid:object_id>/rollback/", self.rollback_view), "rollback"),
            view(("<uuid:object_id>/continue/", self.continue_view), "continue"),
            view(("<uuid:object_id>/abort/", self.abort_view), "abort"),
            *super().get_urls(),
        ]

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "can_execute": self.has_execute_permission(request),
            **extra,
        }

    def _execution(self, object_id) -> MigrationExecution:
        return selectors.execution_get(execution_id=object_id)

    # Run: form -> preview -> confirm -> progress.

    def run_view(self, request: HttpRequest) -> HttpResponse:
        self._require_execute(request)
        form = RunForm(initial=RunForm.initial_from_query(request.GET))
        return render(
            request,
            "admin/migrations_runner/migrationexecution/run.html",
            self._context(request, "Run migrations", form=form, media=self.media + form.media),
        )

    def _preview_page(
        self, request: HttpRequest, form: RunForm, *, query: QueryDict | None = None, stale: bool = False
    ) -> HttpResponse:
        """The plan preview; ``query`` (default: the request's) holds the page number and the form's values."""
        source = request.GET if query is None else query
        try:
            preview = selectors.plan_preview(form.selection(), out_of_order=form.options().out_of_order)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
            return render(
                request,
                "admin/migrations_runner/migrationexecution/run.html",
                self._context(request, "Run migrations", form=form, media=self.media + form.media),
                status=400,
            )
        page = Paginator(preview.targets, PREVIEW_PER_PAGE).get_page(source.get("page"))
        links = source.copy()
        links.pop("page", None)
        return render(
            request,
            "admin/migrations_runner/migrationexecution/preview.html",
            self._context(
                request,
                "Review the plan",
                form=form,
                preview=preview,
                page=page,
                query=links.urlencode(),
                stale=stale,
                hidden=[(name, value) for name in form.data for value in form.data.getlist(name)]
                if hasattr(form.data, "getlist")
                else [],
                media=self.media,
            ),
        )

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """The plan of the form's selection: nothing is recorded or queued."""
        self._require_execute(request)
        form = RunForm(request.GET)
        if not form.is_valid():
            return render(
                request,
                "admin/migrations_runner/migrationexecution/run.html",
                self._context(request, "Run migrations", form=form, media=self.media + form.media),
                status=400,
            )
        return self._preview_page(request, form)

    def confirm_view(self, request: HttpRequest) -> HttpResponse:
        """Start the execution, unless the fleet changed since the preview: then show the new plan."""
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:migrations_runner_migrationexecution_run"))
        self._require_execute(request)
        data = request.POST.copy()
        fingerprint = data.pop("fingerprint", [""])[0]
        data.pop("csrfmiddlewaretoken", None)
        form = RunForm(data)
        if not form.is_valid():
            return render(
                request,
                "admin/migrations_runner/migrationexecution/run.html",
                self._context(request, "Run migrations", form=form, media=self.media + form.media),
                status=400,
            )
        try:
            current = selectors.plan_preview(form.selection(), out_of_order=form.options().out_of_order).fingerprint
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(reverse("admin:migrations_runner_migrationexecution_run"))
        if current != fingerprint:
            messages.warning(request, "The fleet changed since the preview: review the new plan before confirming.")
            return self._preview_page(request, form, query=data, stale=True)
        try:
            execution = services.execution_start(
                selection=form.selection(), options=form.options(), actor=_actor(request), origin=Origin.ADMIN
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(reverse("admin:migrations_runner_migrationexecution_run"))
        self.log_addition(request, execution, f"Started: {selection_in_words(execution)}")
        return HttpResponseRedirect(reverse("admin:migrations_runner_migrationexecution_progress", args=[execution.pk]))

    # Progress.

    def _progress_context(self, execution: MigrationExecution) -> dict[str, Any]:
        progress = selectors.execution_progress(execution=execution)
        failures = list(
            execution.targets.filter(status=TargetStatus.FAILED)
            .select_related("connection")
            .defer("connection__password")  # only the name is shown: never decrypt secrets for a page
            .order_by("-completed_at")[:LATEST_FAILURES]
        )
        waves = selectors.execution_waves(execution=execution)
        waiting_wave = next((w for w in waves if w.state == "awaiting_approval"), None)
        return {
            "execution": execution,
            "progress": progress,
            "failures": failures,
            "waves": waves,
            "waiting_wave": waiting_wave,
        }

    def progress_view(self, request: HttpRequest, object_id) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        execution = self._execution(object_id)
        return render(
            request,
            "admin/migrations_runner/migrationexecution/progress.html",
            self._context(
                request,
                f"Execution {str(execution.pk)[:8]}",
                object_id=execution.pk,
                media=self.media,
                **self._progress_context(execution),
            ),
        )

    def progress_fragment_view(self, request: HttpRequest, object_id) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        execution = self._execution(object_id)
        return render(
            request,
            "admin/migrations_runner/migrationexecution/progress_fragment.html",
            self._progress_context(execution),
        )

    # Detail.

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        execution = self._execution(object_id)
        filters = {}
        for name in ("status", "database_type", "region"):
            value = request.GET.get(name)
            if value is not None and value != "":
                filters[name] = value
        query = request.GET.copy()
        query.pop("cursor", None)
        try:
            page = selectors.execution_targets_page(
                execution=execution, filters=filters, cursor=cursor_param(request), limit=TARGETS_PER_PAGE
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(f"{request.path}?{query.urlencode()}")
        return render(
            request,
            "admin/migrations_runner/migrationexecution/detail.html",
            self._context(
                request,
                f"Execution {str(execution.pk)[:8]}",
                object_id=execution.pk,
                original=execution,
                page=page,
                query=query.urlencode(),
                last_page=LAST_PAGE.encode(),
                filters=filters,
                statuses=TargetStatus.values,
                types=["admin", "shared", "analytics", "tenant"],
                regions=sorted(execution.targets.order_by().values_list("region", flat=True).distinct()),
                spawned=list(execution.spawned.order_by("created_at")),
                kind=kind_label(execution),
                selection=selection_in_words(execution),
                duration=duration_or_eta(execution),
                options=execution.metadata.get("options", {}),
                can_cancel=not execution.is_finished,
                can_retry=execution.is_finished and execution.targets_failed > 0,
                can_rollback=execution.is_finished
                and execution.kind == ExecutionKind.MIGRATE
                and not execution.dry_run
                and execution.status != ExecutionStatus.ROLLED_BACK,
                media=self.media,
                **self._progress_context(execution),
            ),
        )

    # Cancel, Retry failed, Roll back: a confirmation page, then the service.

    def _confirm(self, request: HttpRequest, execution: MigrationExecution, action: str, **extra: Any):
        return render(
            request,
            "admin/migrations_runner/migrationexecution/confirm_action.html",
            self._context(
                request, f"{action} execution {str(execution.pk)[:8]}?", original=execution, action=action, **extra
            ),
        )

    def _spawn(self, request: HttpRequest, execution: MigrationExecution, submit, done: str, of: str) -> HttpResponse:
        """Start the execution ``submit`` spawns from ``execution``, log both, and open its progress page."""
        try:
            spawned = submit()
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(
                reverse("admin:migrations_runner_migrationexecution_change", args=[execution.pk])
            )
        self.log_change(request, execution, f"{done} {spawned.pk}")
        self.log_addition(request, spawned, f"{of} {execution.pk}")
        return HttpResponseRedirect(reverse("admin:migrations_runner_migrationexecution_progress", args=[spawned.pk]))

    def cancel_view(self, request: HttpRequest, object_id) -> HttpResponse:
        self._require_execute(request)
        execution = self._execution(object_id)
        if request.method != "POST" or request.POST.get("post") != "yes":
            return self._confirm(request, execution, "Cancel")
        try:
            execution = services.execution_cancel(execution=execution, actor=_actor(request))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            self.log_change(request, execution, "Cancelled")
            messages.success(request, f"Execution {str(execution.pk)[:8]} cancelled.")
        return HttpResponseRedirect(reverse("admin:migrations_runner_migrationexecution_progress", args=[execution.pk]))

    def _wave_gate_view(self, request: HttpRequest, object_id, action: str, act, done: str) -> HttpResponse:
        """Continue or Abort at a wave gate: a confirmation page naming the wave, then the service."""
        self._require_execute(request)
        execution = self._execution(object_id)
        if request.method != "POST" or request.POST.get("post") != "yes":
            waves = selectors.execution_waves(execution=execution)
            waiting = next((w for w in waves if w.state == "awaiting_approval"), None)
            return self._confirm(request, execution, action, waves=waves, waiting_wave=waiting)
        try:
            execution = act(execution=execution, actor=_actor(request))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            self.log_change(request, execution, done)
            messages.success(request, f"Execution {str(execution.pk)[:8]}: {done.lower()}.")
        return HttpResponseRedirect(reverse("admin:migrations_runner_migrationexecution_progress", args=[execution.pk]))

    def continue_view(self, request: HttpRequest, object_id) -> HttpResponse:
        return self._wave_gate_view(request, object_id, "Continue", services.execution_continue, "Next wave approved")

    def abort_view(self, request: HttpRequest, object_id) -> HttpResponse:
        return self._wave_gate_view(request, object_id, "Abort", services.execution_abort, "Waves aborted")

    def retry_view(self, request: HttpRequest, object_id) -> HttpResponse:
        self._require_execute(request)
        execution = self._execution(object_id)
        if request.method != "POST" or request.POST.get("post") != "yes":
            failed = list(execution.targets.filter(status=TargetStatus.FAILED).select_related("connection")[:200])
            return self._confirm(request, execution, "Retry failed", failed=failed)
        return self._spawn(
            request,
            execution,
            lambda: services.execution_retry(execution=execution, actor=_actor(request), origin=Origin.ADMIN),
            "Retried failed targets as",
            "Retry of",
        )

    def rollback_view(self, request: HttpRequest, object_id) -> HttpResponse:
        self._require_execute(request)
        execution = self._execution(object_id)
        if request.method != "POST" or request.POST.get("post") != "yes":
            plan = selectors.rollback_plan(execution=execution)
            steps = [(run, plan.undo.get(run.pk, [])) for run in plan.runs]
            return self._confirm(request, execution, "Roll back", plan=plan, steps=steps)
        return self._spawn(
            request,
            execution,
            lambda: services.execution_rollback(execution=execution, actor=_actor(request), origin=Origin.ADMIN),
            "Rolled back as",
            "Rollback of",
        )
