"""Admin permissions from the role hierarchy, shared by every app's ModelAdmin."""

from __future__ import annotations

from django.http import HttpRequest

from infra_site import roles


class RoleAdminMixin:
    """View needs ``view_role``; add, change and delete need ``manage_role``."""

    view_role: str = ""
    manage_role: str = ""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return roles.has_role(request.user, self.view_role)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return roles.has_role(request.user, self.view_role)

    def has_add_permission(self, request: HttpRequest, *args) -> bool:
        return roles.has_role(request.user, self.manage_role)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return roles.has_role(request.user, self.manage_role)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return roles.has_role(request.user, self.manage_role)
