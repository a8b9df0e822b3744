"""Application configs of the project package."""

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class InfraSiteConfig(AppConfig):
    """Project-wide pieces: role groups, serving, checks."""

    default = True
    name = "infra_site"
    verbose_name = "Control plane"

    def ready(self) -> None:
        from infra_site.auth import schema  # noqa: F401 (registers the schema extensions)


class InfraAdminConfig(admin_apps.AdminConfig):
    """The Django admin, with a site that lets role holders in."""

    default = False
    default_site = "infra_site.admin_site.InfraAdminSite"
