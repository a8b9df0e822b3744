"""Admin pages of the project package: django-axes' login records, for infrastructure:admin holders.

Deleting an access attempt unlocks that user and address.
"""

from axes import admin as axes_admin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.http import HttpRequest

from infra_site import roles
from infra_site.admin_mixins import RoleAdminMixin


class LoginRecordAdmin(RoleAdminMixin):
    view_role = roles.INFRASTRUCTURE_ADMIN
    manage_role = roles.INFRASTRUCTURE_ADMIN

    def has_add_permission(self, request: HttpRequest, *args) -> bool:
        return False


@admin.register(AccessAttempt)
class AccessAttemptAdmin(LoginRecordAdmin, axes_admin.AccessAttemptAdmin):
    pass


@admin.register(AccessFailureLog)
class AccessFailureLogAdmin(LoginRecordAdmin, axes_admin.AccessFailureLogAdmin):
    pass


@admin.register(AccessLog)
class AccessLogAdmin(LoginRecordAdmin, axes_admin.AccessLogAdmin):
    pass
