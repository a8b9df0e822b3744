"""Admin of the registry: connections (health badge, test action and button, write-only password) and tenants.

The console app registers subclasses of these with the migrations' actions and columns and the health trend.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from connections import selectors, services
from connections.forms import CONNECTION_FIELDS, DatabaseConnectionForm, TenantForm
from connections.models import DatabaseConnection, Tenant, TenantStatus
from infra_site import roles
from infra_site.admin_mixins import RoleAdminMixin
from infra_site.admin_site import ForbiddenActionMixin
from infra_site.errors import ApplicationError


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


def health_badge(connection: DatabaseConnection) -> str:
    """Return a coloured badge for the connection's latest health snapshot."""
    if connection.is_healthy is None:
        colour, label, title = "#777", "unknown", "Never tested"
    elif connection.is_healthy:
        colour, label, title = "#2e7d32", "healthy", f"{connection.response_time_ms or 0:.0f} ms"
    else:
        colour, label, title = "#c62828", connection.error_cause or "unhealthy", connection.error
    return format_html(
        '<span title="{}" style="background:{};color:#fff;border-radius:8px;padding:2px 8px;font-size:11px;'
        'white-space:nowrap">{}</span>',
        title,
        colour,
        label,
    )


@admin.register(DatabaseConnection)
class DatabaseConnectionAdmin(ForbiddenActionMixin, RoleAdminMixin, admin.ModelAdmin):
    view_role = roles.DATABASES_READ
    manage_role = roles.DATABASES_MANAGE
    form = DatabaseConnectionForm
    list_display = [
        "name",
        "database_type",
        "region",
        "address_display",
        "health",
        "response_time_display",
        "version_display",
        "checked_at",
        "is_active",
    ]
    list_filter = ["database_type", "region", "is_active", "is_healthy", "ssl_mode", "auth_methods"]
    search_fields = ["name", "host", "database_name", "region", "username"]
    ordering = ["database_type", "region", "name"]
    actions = ["test_selected"]
    readonly_fields = [
        "health",
        "response_time_ms",
        "server_version",
        "checked_at",
        "error",
        "created_by",
        "created_at",
        "updated_by",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": list(services.PLACEMENT_FIELDS)}),
        ("Connection", {"fields": [*services.ACCESS_FIELDS, "verify"]}),
        ("Health", {"fields": ["health", "response_time_ms", "server_version", "checked_at", "error"]}),
        ("Audit", {"classes": ["collapse"], "fields": ["created_by", "created_at", "updated_by", "updated_at"]}),
    ]

    @admin.display(description="Health", ordering="is_healthy")
    def health(self, obj: DatabaseConnection) -> str:
        return health_badge(obj)

    @admin.display(description="Address", ordering="host")
    def address_display(self, obj: DatabaseConnection) -> str:
        return obj.address

    @admin.display(description="Response", ordering="response_time_ms")
    def response_time_display(self, obj: DatabaseConnection) -> str:
        return "-" if obj.response_time_ms is None else f"{obj.response_time_ms:.1f} ms"

    @admin.display(description="Server")
    def version_display(self, obj: DatabaseConnection) -> str:
        return " ".join(obj.server_version.split()[:2])

    def get_queryset(self, request: HttpRequest) -> QuerySet[DatabaseConnection]:
        return selectors.connection_list()

    # The add and change pages take the password: an error report (DEBUG's page, a mailed 500) must not show it.
    @method_decorator(sensitive_post_parameters("password"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(request, *args, **kwargs)

    def save_model(self, request: HttpRequest, obj: DatabaseConnection, form: DatabaseConnectionForm, change: bool):
        values = {name: form.cleaned_data[name] for name in CONNECTION_FIELDS}
        common = {"actor": _actor(request), "verify": form.cleaned_data["verify"], "probe_result": form.probe_result}
        if change:
            stored = selectors.connection_get(connection_id=obj.pk)
            saved = services.connection_update(connection=stored, **common, **values)
        else:
            saved = services.connection_create(**common, **values)
        obj.pk = saved.pk
        form.instance = saved

    def delete_model(self, request: HttpRequest, obj: DatabaseConnection) -> None:
        services.connection_delete(connection=obj, actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[DatabaseConnection]) -> None:
        for connection in queryset:
            services.connection_delete(connection=connection, actor=_actor(request))

    def get_deleted_objects(self, objs, request: HttpRequest):
        """What the confirmation page lists: the connections alone. Deleting is soft (as the API's DELETE): their
        tenants and target runs stay, so nothing related is deleted or protects the connection."""
        connections = list(objs)
        count = {DatabaseConnection._meta.verbose_name_plural: len(connections)} if connections else {}
        return [str(connection) for connection in connections], count, set(), []

    def _report(self, request: HttpRequest, connection: DatabaseConnection, result) -> None:
        if result.ok:
            messages.success(
                request, f"{connection.name}: healthy, {result.response_time_ms:.1f} ms, {result.server_version}"
            )
        else:
            messages.error(request, f"{connection.name}: {result.description} ({connection.error})")

    def has_manage_permission(self, request: HttpRequest) -> bool:
        """Testing writes the health snapshot, so it needs the role that changes connections (as in the API)."""
        return roles.has_role(request.user, self.manage_role)

    @admin.action(description="Test selected connections", permissions=["manage"])
    def test_selected(self, request: HttpRequest, queryset: QuerySet[DatabaseConnection]) -> None:
        for connection, result in services.connection_test_many(connections=queryset):
            self._report(request, connection, result)

    def get_urls(self):
        custom = [
            path(
                "<uuid:object_id>/test/",
                self.admin_site.admin_view(require_POST(self.test_view)),
                name="connections_databaseconnection_test",
            )
        ]
        return custom + super().get_urls()

    def test_view(self, request: HttpRequest, object_id) -> HttpResponseRedirect:
        """The change page's "Test connection" button."""
        if not self.has_manage_permission(request):
            raise PermissionDenied
        connection = get_object_or_404(selectors.connection_list(), pk=object_id)
        try:
            result = services.connection_test(connection=connection)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            self._report(request, connection, result)
        return HttpResponseRedirect(reverse("admin:connections_databaseconnection_change", args=[object_id]))


@admin.register(Tenant)
class TenantAdmin(ForbiddenActionMixin, RoleAdminMixin, admin.ModelAdmin):
    """Tenants: suspending and activating them."""

    view_role = roles.DATABASES_READ
    manage_role = roles.DATABASES_MANAGE
    form = TenantForm
    list_display = [
        "slug",
        "name",
        "connection",
        "schema_name",
        "region_display",
        "status",
        "updated_at",
    ]
    list_filter = ["status", "connection__region", "connection"]
    search_fields = ["slug", "name", "schema_name", "connection__name"]
    list_select_related = ["connection"]
    readonly_fields = ["error", "created_by", "created_at", "updated_at"]
    actions = ["suspend_selected", "activate_selected"]

    @admin.display(description="Region", ordering="connection__region")
    def region_display(self, obj: Tenant) -> str:
        return obj.connection.region

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, self.manage_role)

    @admin.action(description="Suspend selected tenants", permissions=["manage"])
    def suspend_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_status(request, queryset, TenantStatus.SUSPENDED, from_status=TenantStatus.ACTIVE)

    @admin.action(description="Activate selected suspended tenants", permissions=["manage"])
    def activate_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_status(request, queryset, TenantStatus.ACTIVE, from_status=TenantStatus.SUSPENDED)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[Tenant], status: str, *, from_status: str) -> None:
        """Move the selected tenants in ``from_status`` to ``status`` (provisioning ones only finish provisioning)."""
        changed, left = [], []
        for tenant in queryset:
            if tenant.status != from_status:
                left.append(tenant.slug)
                continue
            try:
                services.tenant_update(tenant=tenant, actor=_actor(request), status=status)
            except ApplicationError as exc:
                messages.error(request, f"{tenant.slug}: {exc.message}")
                continue
            self.log_change(request, tenant, f"Status {from_status} -> {status}.")
            changed.append(tenant.slug)
        if changed:
            messages.success(request, f"{len(changed)} tenant(s) now {status}: {', '.join(changed)}.")
        if left:
            messages.warning(request, f"Left as they are (not {from_status}): {', '.join(left)}.")

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> list[str]:
        return [*self.readonly_fields, "slug"] if obj else list(self.readonly_fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return selectors.tenant_list().defer("connection__password")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "connection":
            kwargs["queryset"] = selectors.connection_list().filter(database_type__in=["shared", "tenant"])
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Tenant, form: TenantForm, change: bool) -> None:
        data = dict(form.cleaned_data)
        if change:
            stored = selectors.tenant_get(slug=obj.slug)
            data.pop("slug", None)
            saved = services.tenant_update(tenant=stored, actor=_actor(request), **data)
        else:
            saved = services.tenant_create(actor=_actor(request), **data)
        obj.pk = saved.pk
        form.instance = saved
