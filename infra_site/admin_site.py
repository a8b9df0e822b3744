"""The admin site: operators with any control-plane role may sign in.

Apps add pages that belong to no model (the fleet view, the migration sets) with ``register_view``, and what the
index shows above the app list with ``register_dashboard``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse

from infra_site import roles

# django-axes' login records: listed last, under this heading, after the apps operators work in every day.
SECURITY_APP_LABEL = "axes"
SECURITY_HEADING = "Security"


class OperatorAuthenticationForm(AdminAuthenticationForm):
    """The admin's password form, admitting role holders as well as staff (roles are what grant access here)."""

    def confirm_login_allowed(self, user) -> None:
        AuthenticationForm.confirm_login_allowed(self, user)
        if not (user.is_staff or roles.user_roles(user)):
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


class ForbiddenActionMixin(admin.ModelAdmin):
    """Answer 403 to a POST of an action the user may not run.

    Django drops such an action from the list and answers the POST with "No action selected", which hides a
    forged request; the role check of the action itself stays with ``@admin.action(permissions=[...])``.
    """

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        name = request.POST.get("action", "") if request.method == "POST" else ""
        if name and name not in self.get_actions(request) and self.get_action(name) is not None:
            raise PermissionDenied(f"You may not run the action {name!r}.")
        return super().changelist_view(request, extra_context)


@dataclass(frozen=True)
class ConsoleView:
    """A page of the admin that belongs to no model, listed under an app for the holders of ``role``."""

    route: str
    view: Callable[..., HttpResponse]
    name: str
    title: str = ""
    app_label: str = ""
    role: str = ""


class InfraAdminSite(admin.AdminSite):
    site_header = "Infrastructure control plane"
    site_title = "Infrastructure control plane"
    index_title = "Dashboard"
    login_form = OperatorAuthenticationForm

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)
        self._console_views: list[ConsoleView] = []
        self._dashboard_context: Callable[[HttpRequest], dict[str, Any]] | None = None

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and (user.is_staff or roles.user_roles(user)))

    def register_view(
        self,
        route: str,
        view: Callable[..., HttpResponse],
        *,
        name: str,
        title: str = "",
        app_label: str = "",
        role: str = "",
    ) -> None:
        """Serve ``view`` at ``<admin>/<route>`` as ``admin:<name>`` behind the admin's login (the view checks its
        own role); with a ``title``, list it in the app list under ``app_label`` for the holders of ``role``."""
        self._console_views.append(
            ConsoleView(route=route, view=view, name=name, title=title, app_label=app_label, role=role)
        )

    def register_dashboard(self, *, template: str, context: Callable[[HttpRequest], dict[str, Any]]) -> None:
        """Render the index with ``template``, given what ``context(request)`` returns besides the app list."""
        self.index_template = template
        self._dashboard_context = context

    def get_urls(self) -> list[URLResolver | URLPattern]:
        # Before the models' URLs, whose catch-all would take them for object ids.
        console: list[URLResolver | URLPattern] = [
            path(v.route, self.admin_view(v.view), name=v.name) for v in self._console_views
        ]
        return console + super().get_urls()

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        app_list = super().get_app_list(request, app_label)
        by_label = {app["app_label"]: app for app in app_list}
        for view in self._console_views:
            if not view.title or app_label not in (None, view.app_label) or not roles.has_role(request.user, view.role):
                continue
            app = by_label.get(view.app_label)
            if app is None:
                config = apps.get_app_config(view.app_label)
                app = by_label[view.app_label] = {
                    "name": config.verbose_name,
                    "app_label": view.app_label,
                    "app_url": reverse("admin:app_list", kwargs={"app_label": view.app_label}, current_app=self.name),
                    "has_module_perms": True,
                    "models": [],
                }
                app_list.append(app)
                app_list.sort(key=lambda entry: entry["name"].lower())
            app["models"].append(
                {
                    "name": view.title,
                    "object_name": view.name,
                    "perms": {"view": True},
                    "admin_url": reverse(f"admin:{view.name}", current_app=self.name),
                    "add_url": None,
                    "view_only": True,
                }
            )
        security = [app for app in app_list if app["app_label"] == SECURITY_APP_LABEL]
        for app in security:
            app["name"] = SECURITY_HEADING
        return [app for app in app_list if app["app_label"] != SECURITY_APP_LABEL] + security

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        dashboard = self._dashboard_context(request) if self._dashboard_context else {}
        return super().index(request, {**dashboard, **(extra_context or {})})


def project_site() -> InfraAdminSite:
    """``admin.site``, typed as the project's site (``infra_site.apps`` makes it the default site)."""
    site = admin.site
    assert isinstance(site, InfraAdminSite)
    return site
