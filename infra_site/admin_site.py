"""The admin site: operators with any control-plane role may sign in."""

from django.contrib import admin
from django.http import HttpRequest

from infra_site import roles


class InfraAdminSite(admin.AdminSite):
    site_header = "Infrastructure control plane"
    site_title = "Infrastructure control plane"
    index_title = "Fleet"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and (user.is_staff or roles.user_roles(user)))
