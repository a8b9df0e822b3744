"""The admin's pages that combine apps: the dashboard, and the registry's admin with the migrations' actions and
columns and the health trend.

The registry (``connections``) knows nothing of the apps built on it: its ModelAdmins are replaced here by
subclasses that add what those apps offer, as projects extend ``contrib.auth``'s ``UserAdmin``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from connections import admin as registry_admin
from connections import selectors as registry
from connections.models import DatabaseConnection, Tenant
from health.admin import connection_health_trend
from infra_site import roles
from infra_site.admin_site import project_site
from migrations_runner import selectors as migrations
from migrations_runner.admin.tenants import may_provision

LATEST_EXECUTIONS = 10
UNHEALTHY_SHOWN = 20


def dashboard_context(request: HttpRequest) -> dict[str, Any]:
    """Return what the admin's index shows above the app list, each part for the role that may read it."""
    context: dict[str, Any] = {
        "can_read_migrations": roles.has_role(request.user, roles.MIGRATIONS_READ),
        "can_execute": roles.has_role(request.user, roles.MIGRATIONS_EXECUTE),
        "can_read_databases": roles.has_role(request.user, roles.DATABASES_READ),
    }
    if context["can_read_migrations"]:
        overview = migrations.executions_overview(latest=LATEST_EXECUTIONS)
        context["fleet_counts"] = migrations.fleet_counts()
        context["latest_executions"] = overview.latest
        context["waiting_for_worker"] = overview.waiting_for_worker
    if context["can_read_databases"]:
        context["unhealthy_connections"] = list(
            registry.connection_list(is_healthy=False)
            .defer("password")
            .order_by("database_type", "name")[:UNHEALTHY_SHOWN]
        )
    return context


project_site().register_dashboard(template="console/dashboard.html", context=dashboard_context)


def _open_page(view: str, **query: object) -> HttpResponseRedirect:
    """Open a page of the migrations console with a selection in its address; nothing changes before it is
    confirmed there."""
    return HttpResponseRedirect(f"{reverse(view)}?{urlencode(query, doseq=True)}")


def _with_health_trend(fieldsets: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Return ``fieldsets`` with the last day's periodic checks right after the health badge."""
    extended = []
    for name, options in fieldsets:
        fields = list(options["fields"])
        if "health" in fields:
            fields.insert(fields.index("health") + 1, "health_trend")
        extended.append((name, {**options, "fields": fields}))
    return extended


admin.site.unregister(DatabaseConnection)


@admin.register(DatabaseConnection)
class ConsoleDatabaseConnectionAdmin(registry_admin.DatabaseConnectionAdmin):
    """The registry's connections, with the health trend and the Flyway adoption and baseline actions."""

    actions = [*registry_admin.DatabaseConnectionAdmin.actions, "adopt_flyway_selected", "baseline_selected"]
    readonly_fields = [*registry_admin.DatabaseConnectionAdmin.readonly_fields, "health_trend"]
    fieldsets = _with_health_trend(registry_admin.DatabaseConnectionAdmin.fieldsets)

    @admin.display(description="Last 24 h")
    def health_trend(self, obj: DatabaseConnection) -> str:
        return connection_health_trend(obj)

    def has_migrations_manage_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, roles.MIGRATIONS_MANAGE)

    @admin.action(description="Adopt Flyway history (with the tenants they host)", permissions=["migrations_manage"])
    def adopt_flyway_selected(
        self, request: HttpRequest, queryset: QuerySet[DatabaseConnection]
    ) -> HttpResponseRedirect:
        """Open the dry-run report of adopting the Flyway history of these connections and their tenants."""
        names = sorted(queryset.values_list("name", flat=True))
        return _open_page("admin:migrations_runner_adopt_flyway", scope="all", connections=names)

    @admin.action(description="Baseline at version…", permissions=["migrations_manage"])
    def baseline_selected(
        self, request: HttpRequest, queryset: QuerySet[DatabaseConnection]
    ) -> HttpResponseRedirect | None:
        """Open the baseline page of one connection's own target (its default schema)."""
        names = sorted(queryset.values_list("name", flat=True))
        if len(names) != 1:
            messages.error(request, "Baseline one connection at a time (its default schema).")
            return None
        return _open_page("admin:migrations_runner_baseline", connection=names[0])


admin.site.unregister(Tenant)


@admin.register(Tenant)
class ConsoleTenantAdmin(registry_admin.TenantAdmin):
    """The registry's tenants, with where their latest migration left them (from the control database: one
    annotation per page), migrating, provisioning, Flyway adoption and baselines."""

    change_list_template = "console/tenant_change_list.html"
    list_display = [
        "slug",
        "name",
        "connection",
        "schema_name",
        "region_display",
        "status",
        "version_display",
        "pending_display",
        "updated_at",
    ]
    actions = [
        "migrate_selected",
        "suspend_selected",
        "activate_selected",
        "adopt_flyway_selected",
        "baseline_selected",
    ]

    @admin.display(description="Version")
    def version_display(self, obj: Tenant) -> str:
        version = getattr(obj, "latest_version", None)
        if version is None:
            return "never"
        return version or "none"

    @admin.display(description="Pending")
    def pending_display(self, obj: Tenant) -> str:
        pending = getattr(obj, "pending_versions", None)
        return "-" if pending is None else str(pending)

    def has_migrate_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, roles.MIGRATIONS_EXECUTE)

    @admin.action(description="Migrate selected tenants", permissions=["migrate"])
    def migrate_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponseRedirect:
        """Open the Run form with the selected tenants; nothing runs before it is confirmed there."""
        slugs = sorted(queryset.values_list("slug", flat=True))
        return _open_page("admin:migrations_runner_migrationexecution_run", scope="tenant", tenants=slugs)

    def has_migrations_manage_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, roles.MIGRATIONS_MANAGE)

    @admin.action(description="Adopt Flyway history", permissions=["migrations_manage"])
    def adopt_flyway_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponseRedirect:
        """Open the dry-run report of adopting these tenants' Flyway history."""
        slugs = sorted(queryset.values_list("slug", flat=True))
        return _open_page("admin:migrations_runner_adopt_flyway", scope="tenant", tenants=slugs)

    @admin.action(description="Baseline at version…", permissions=["migrations_manage"])
    def baseline_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponseRedirect:
        """Open the baseline page of these tenants: the version, its dry-run report, then the confirmation."""
        return _open_page("admin:migrations_runner_baseline", tenants=sorted(queryset.values_list("slug", flat=True)))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"can_provision": may_provision(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return migrations.tenants_with_version(tenants=super().get_queryset(request))

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """The list's page, each tenant with the number of tenant-set versions after its version (no query)."""
        changelist = super().get_changelist_instance(request)
        tenant_set = migrations.sets_load(strict=False).get("tenant")
        for tenant in changelist.result_list:
            tenant.pending_versions = migrations.version_pending_count(mset=tenant_set, version=tenant.latest_version)
        return changelist
