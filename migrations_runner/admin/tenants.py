"""Pages of this app that the registry's admin opens: provisioning a tenant (register it, then follow its first
migration on the progress page), adopting Flyway history and baselining targets (a dry-run report first, then a
confirmation).

Pages of this app rather than of the tenants' and connections' admin: the registry (``connections``) knows nothing
of migrations. The tenants' change list links here, and its actions and the connections' open these pages.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse

from connections import selectors as registry
from connections.models import DatabaseConnection, DatabaseType, Tenant
from connections.validators import validate_schema_name, validate_tenant_slug
from infra_site import roles
from infra_site.admin_site import project_site
from infra_site.errors import ApplicationError
from migrations_runner import services
from migrations_runner.admin.fleet import page_context, require_role
from migrations_runner.engine import flyway
from migrations_runner.models import Origin, Scope
from migrations_runner.selection import TargetSelection

# The project's site, where these pages are registered (typed: django's AdminSite has no ``register_view``).
site = project_site()


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
        field = self.fields["connection"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = (
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


site.register_view("migrations_runner/provision-tenant/", provision_view, name="migrations_runner_provision_tenant")


# --- Adopting Flyway history and baselines ------------------------------------------------------------------------

# The status_badge colour of each status of an adoption or baseline report.
REPORT_BADGES = {
    "adopted": "succeeded",
    "baselined": "succeeded",
    "up_to_date": "up_to_date",
    "no_flyway_history": "skipped",
    "refused": "failed",
    "error": "failed",
}


class BaselineForm(forms.Form):
    version = forms.CharField(
        max_length=50, help_text="The version the target is at: digits separated by '.' (5, 1.1)."
    )
    force = forms.BooleanField(
        required=False, help_text="Baseline even over versions the target's history shows undone (needs a reason)."
    )
    reason = forms.CharField(
        max_length=500, required=False, help_text="Why a forced baseline is right; recorded in the history."
    )

    def clean_version(self) -> str:
        try:
            return str(flyway.baseline_version(self.cleaned_data["version"]))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


def _with_badges(targets: list[dict]) -> list[dict]:
    return [{**target, "badge": REPORT_BADGES.get(target["status"], "unknown")} for target in targets]


def _log_done(request: HttpRequest, targets: list[dict], done: str, what: str) -> None:
    """Record ``what`` in the admin history of each tenant or connection whose target ended ``done``."""
    finished = [t for t in targets if t["status"] == done]
    tenants = Tenant.objects.in_bulk([t["tenant"] for t in finished if t["tenant"]], field_name="slug")
    names = [t["connection"] for t in finished if not t["tenant"]]
    connections = {c.name: c for c in registry.connection_list(names=names).defer("password")} if names else {}
    for target in finished:
        obj = tenants.get(target["tenant"]) if target["tenant"] else connections.get(target["connection"])
        if obj is not None:
            admin.site.get_model_admin(type(obj)).log_change(request, obj, f"{what}: {target['message']}")


def adopt_flyway_view(request: HttpRequest) -> HttpResponse:
    """The Flyway adoption of a selection: its dry-run report, then (POST ``post=yes``) the adoption itself."""
    require_role(request, roles.MIGRATIONS_MANAGE)
    query = request.POST if request.method == "POST" else request.GET
    confirmed = request.method == "POST" and request.POST.get("post") == "yes"
    accept_drift = query.get("accept_drift") == "on"
    context: dict[str, Any] = {"confirmed": confirmed, "accept_drift": accept_drift, "opts": Tenant._meta}
    try:
        selection = TargetSelection(
            scope=query.get("scope") or Scope.ALL,
            connections=query.getlist("connections"),
            tenants=query.getlist("tenants"),
        )
        context["selection"] = selection
        report = services.flyway_adopt(
            selection=selection, actor=request.user.get_username(), dry_run=not confirmed, accept_drift=accept_drift
        )
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(
            request,
            "admin/migrations_runner/adoption/adopt.html",
            page_context(request, "Adopt Flyway history", **context),
            status=exc.status_code,
        )
    if confirmed:
        _log_done(request, report["targets"], "adopted", "Adopted Flyway history")
        notify = messages.warning if services.adoption_needs_attention(report) else messages.success
        notify(
            request,
            f"Flyway history: {report['adopted']} target(s) adopted, {report['refused']} refused, "
            f"{report['drifted']} with drift, {report['unreadable']} error(s).",
        )
    hidden = [("scope", selection.scope)]
    hidden += [("connections", name) for name in selection.connections]
    hidden += [("tenants", slug) for slug in selection.tenants]
    return render(
        request,
        "admin/migrations_runner/adoption/adopt.html",
        page_context(
            request,
            "Flyway history adopted" if confirmed else "Adopt Flyway history?",
            report=report,
            targets=_with_badges(report["targets"]),
            hidden=hidden,
            **context,
        ),
    )


def baseline_view(request: HttpRequest) -> HttpResponse:
    """Baseline the selected tenants (or one connection's own target) at a version: the version, its dry-run report,
    then (POST ``post=yes``) the baseline itself."""
    require_role(request, roles.MIGRATIONS_MANAGE)
    query = request.POST if request.method == "POST" else request.GET
    confirmed = request.method == "POST" and request.POST.get("post") == "yes"
    tenants, connection = query.getlist("tenants"), query.get("connection", "")
    back = "admin:connections_tenant_changelist" if tenants else "admin:connections_databaseconnection_changelist"
    form = BaselineForm(query if "version" in query else None)
    context: dict[str, Any] = {
        "form": form,
        "opts": Tenant._meta if tenants else DatabaseConnection._meta,
        "back": back,
    }
    try:
        if tenants:
            selection = TargetSelection(scope=Scope.TENANT, tenants=tenants)
        else:
            selection = services.baseline_selection(connection=connection or None)
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(
            request,
            "admin/migrations_runner/adoption/baseline.html",
            page_context(request, "Baseline at version", **context),
            status=exc.status_code,
        )
    hidden = [("tenants", slug) for slug in tenants] or [("connection", connection)]
    context.update(selection=selection, hidden=hidden)
    status = 200
    if form.is_valid():
        try:
            report = services.target_baseline(
                selection=selection,
                version=form.cleaned_data["version"],
                actor=request.user.get_username(),
                dry_run=not confirmed,
                force=form.cleaned_data["force"],
                reason=form.cleaned_data["reason"],
            )
        except ApplicationError as exc:
            undone = {
                target: f"undone: {', '.join(versions)}" for target, versions in exc.details.get("undone", {}).items()
            }
            context.update(error=exc.message, refusals=sorted({**exc.details.get("targets", {}), **undone}.items()))
            status = exc.status_code
        else:
            if confirmed:
                _log_done(request, report["targets"], "baselined", "Baselined")
                messages.success(request, f"{report['count']} target(s) baselined at version {report['version']}.")
                return HttpResponseRedirect(reverse(back))
            context.update(report=report, targets=_with_badges(report["targets"]))
    elif form.is_bound:
        status = 400
    return render(
        request,
        "admin/migrations_runner/adoption/baseline.html",
        page_context(request, "Baseline at version", **context),
        status=status,
    )


site.register_view("migrations_runner/adopt-flyway/", adopt_flyway_view, name="migrations_runner_adopt_flyway")
site.register_view("migrations_runner/baseline/", baseline_view, name="migrations_runner_baseline")
