"""Application configs of the project package."""

import contextlib
import os

from django.apps import AppConfig
from django.conf import settings
from django.contrib.admin import apps as admin_apps
from django.db.backends.signals import connection_created

# SQLite's files of one database: the database, its write-ahead log and its shared-memory index.
SQLITE_SUFFIXES = ("", "-wal", "-shm")


def keep_sqlite_files_private(sender, connection, **kwargs) -> None:
    """Make a SQLite control database's files readable by this account only (SQLite creates them by the umask).

    SQLite gives a new log and index the database file's mode, so they stay private once it is.
    """
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict["NAME"])
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    for suffix in SQLITE_SUFFIXES:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chmod(name + suffix, 0o600)


class InfraSiteConfig(AppConfig):
    """Project-wide pieces: role groups, serving, checks."""

    default = True
    name = "infra_site"
    verbose_name = "Control plane"

    def ready(self) -> None:
        connection_created.connect(keep_sqlite_files_private, dispatch_uid="infra_site.private_sqlite")
        from infra_site.auth import basic_cache

        basic_cache.connect_signals()
        if settings.TASK_CLUSTER_PROCESS:
            # Derived once here, before django-q2 forks the workers, not once in every worker at its first lane.
            from infra_site import crypto

            crypto.derive_ciphers()


class InfraAdminConfig(admin_apps.AdminConfig):
    """The Django admin, with a site that lets role holders in."""

    default = False
    default_site = "infra_site.admin_site.InfraAdminSite"
