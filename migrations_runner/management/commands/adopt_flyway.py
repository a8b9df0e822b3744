"""Adopt targets migrated by Flyway: import their flyway_schema_history into our history."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from infra_site.cli import application_errors, cli_actor, to_json
from migrations_runner import services
from migrations_runner.models import Scope
from migrations_runner.selection import TargetSelection

FINDINGS = (("drift", "drift"), ("missing_from_set", "not in the set"), ("failed_rows", "failed row"))


class Command(BaseCommand):
    # Only this app's checks (dependency DAG, sets): the URL, admin and model checks add start-up time.
    requires_system_checks = ["migrations"]
    help = (
        "Import the Flyway history (flyway_schema_history) of the selected targets into infra_schema_history, so "
        "the next run applies only what Flyway had not. A target with drift is refused unless --accept-drift. "
        "Exit status 1 on drift, refusals or errors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scope", choices=Scope.values, default=Scope.ALL)
        parser.add_argument("--region", action="append", default=[], help="Narrow to a region (repeatable).")
        parser.add_argument("--connection", action="append", default=[], help="Narrow to a connection (repeatable).")
        parser.add_argument("--tenant", action="append", default=[], help="Narrow to a tenant slug (repeatable).")
        parser.add_argument("--dry-run", action="store_true", help="Report what would be imported; change nothing.")
        parser.add_argument(
            "--accept-drift",
            action="store_true",
            help="Import versions whose script changed since Flyway applied it (versions not in the set stay out).",
        )
        parser.add_argument(
            "--table",
            default="",
            help="Flyway's history table (default: the set's configuration, else flyway_schema_history or, from "
            "Flyway before 5, schema_version).",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        with application_errors():
            selection = TargetSelection(
                scope=options["scope"],
                regions=options["region"],
                connections=options["connection"],
                tenants=options["tenant"],
            )
            report = services.flyway_adopt(
                selection=selection,
                actor=cli_actor(),
                dry_run=options["dry_run"],
                accept_drift=options["accept_drift"],
                table=options["table"],
            )
        if options["json"]:
            self.stdout.write(to_json(report))
        else:
            self._print(report)
        if services.adoption_needs_attention(report):
            raise CommandError("Adoption needs attention: drift, refusals or errors (see the report).", returncode=1)

    def _print(self, report: dict[str, Any]) -> None:
        for target in report["targets"]:
            self.stdout.write(f"{target['target']:<50} {target['status']:<18} {target['message']}")
            for key, label in FINDINGS:
                for finding in target[key]:
                    where = f"version {finding['version']}" if finding["version"] else finding["script"]
                    self.stdout.write(f"    {label}: {where} (rank {finding['installed_rank']}): {finding['reason']}")
            for warning in target["warnings"]:
                self.stdout.write(f"    warning: {warning}")
        verb = "would be adopted" if report["dry_run"] else "adopted"
        self.stdout.write(
            f"{report['count']} target(s): {report['adopted']} {verb}, {report['refused']} refused, "
            f"{report['drifted']} with drift, {report['unreadable']} unreadable."
        )
