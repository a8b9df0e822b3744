"""The admin site: operators with any control-plane role may sign in."""

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from infra_site import roles


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


class InfraAdminSite(admin.AdminSite):
    site_header = "Infrastructure control plane"
    site_title = "Infrastructure control plane"
    index_title = "Fleet"
    login_form = OperatorAuthenticationForm

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and (user.is_staff or roles.user_roles(user)))
