"""Provision a tenant: register it, create its schema and run the tenant set on it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections import selectors as registry
from infra_site.cli import application_errors, cli_actor, to_json
from migrations_runner import services
from migrations_runner.models import Origin


class Command(BaseCommand):
    help = (
        "Create a tenant (status provisioning), its schema, and run the tenant set on it; on success the tenant "
        "becomes active. On failure it stays provisioning with the error; run the command again to resume."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", help="Display name (default: the slug).")
        parser.add_argument("--connection", required=True, help="The shared or dedicated tenant database.")
        parser.add_argument("--schema", help="Schema name (default tenant_<slug>, or public in a dedicated database).")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, slug: str, **options: Any) -> None:
        with application_errors():
            connection = registry.connection_get_by_name(name=options["connection"])
            tenant, execution = services.tenant_provision(
                slug=slug,
                name=options["name"] or slug,
                connection=connection,
                schema_name=options["schema"],
                actor=cli_actor(),
                origin=Origin.COMMAND,
                wait=True,
            )
        run = execution.targets.get()
        result = {
            "tenant": tenant.slug,
            "status": tenant.status,
            "schema": tenant.schema_name,
            "version": run.to_version or None,
            "error": tenant.error or None,
            "execution": str(execution.pk),
        }
        if options["json"]:
            self.stdout.write(to_json(result))
        else:
            self.stdout.write(
                f"Tenant {tenant.slug}: {tenant.status}, schema {tenant.schema_name} at version "
                f"{run.to_version or '-'}" + (f"; error: {tenant.error}" if tenant.error else "")
            )
        if tenant.status != "active":
            raise CommandError(f"Tenant {tenant.slug} is {tenant.status}: {tenant.error}", returncode=1)
