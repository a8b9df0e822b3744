"""Provisioning a tenant from the admin: register it, then follow its first migration on the progress page.

A page of this app rather than of the tenants' admin: the registry (``connections``) knows nothing of migrations.
The tenants' change list links here.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from connections import selectors as registry
from connections.models import DatabaseConnection, DatabaseType, Tenant
from connections.validators import validate_schema_name, validate_tenant_slug
from infra_site import roles
from infra_site.errors import ApplicationError
from migrations_runner import services
from migrations_runner.admin.fleet import page_context, require_role
from migrations_runner.models import Origin


class ProvisionTenantForm(forms.Form):
    slug = forms.CharField(max_length=48, validators=[validate_tenant_slug])
    name = forms.CharField(max_length=200)
    connection = forms.ModelChoiceField(
        queryset=DatabaseConnection.objects.none(), help_text="A shared database, or a dedicated tenant database."
    )
    schema_name = forms.CharField(
        max_length=63,
        required=False,
        validators=[validate_schema_name],
        help_text="Leave empty for the schema derived from the slug.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["connection"].queryset = (
            registry.connection_list(is_active=True)
            .filter(database_type__in=[DatabaseType.SHARED, DatabaseType.TENANT])
            .defer("password")
        )


def may_provision(request: HttpRequest) -> bool:
    """Provisioning registers a tenant (databases:manage) and migrates it (migrations:execute)."""
    return roles.has_role(request.user, roles.DATABASES_MANAGE) and roles.has_role(
        request.user, roles.MIGRATIONS_EXECUTE
    )


def provision_view(request: HttpRequest) -> HttpResponse:
    """Provision a tenant: queue its first execution and go to that execution's progress page."""
    require_role(request, roles.DATABASES_MANAGE)
    require_role(request, roles.MIGRATIONS_EXECUTE)
    form = ProvisionTenantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        resumed = Tenant.objects.filter(slug=data["slug"]).exists()
        try:
            tenant, execution = services.tenant_provision(
                slug=data["slug"],
                name=data["name"],
                connection=data["connection"],
                schema_name=data["schema_name"] or None,
                actor=request.user.get_username(),
                background=True,
                origin=Origin.ADMIN,
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            tenant_admin = admin.site.get_model_admin(Tenant)
            message = f"Provisioning: execution {execution.pk}."
            if resumed:
                tenant_admin.log_change(request, tenant, message)
            else:
                tenant_admin.log_addition(request, tenant, message)
            messages.success(request, f"Provisioning tenant {tenant.slug}: its migration is under way.")
            return HttpResponseRedirect(
                reverse("admin:migrations_runner_migrationexecution_progress", args=[execution.pk])
            )
    return render(
        request,
        "admin/connections/tenant/provision.html",
        page_context(request, "Provision a tenant", form=form, opts=Tenant._meta),
        status=400 if form.errors else 200,
    )


admin.site.register_view(
    "migrations_runner/provision-tenant/", provision_view, name="migrations_runner_provision_tenant"
)
