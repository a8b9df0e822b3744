"""Mark a target migrated by hand as being at a version, without running anything."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from infra_site.cli import application_errors, cli_actor, to_json
from migrations_runner import services


class Command(BaseCommand):
    # Only this app's checks (dependency DAG, sets): the URL, admin and model checks add start-up time.
    requires_system_checks = ["migrations"]
    help = (
        "Record a baseline: the target (a tenant's schema, or a connection's default schema) is at --version, so "
        "runs apply only the versions above it. Refused when the target has history at or above the version, or "
        "(without --force and a --reason) when its history shows versions up to it undone."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        # --version names the baseline here: Django's own --version (its release number) gives way to it.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--tenant", help="The tenant whose schema is baselined.")
        target.add_argument("--connection", help="The connection whose default schema is baselined.")
        parser.add_argument("--version", required=True, dest="baseline_version", help="The version, e.g. 5 or 1.1.")
        parser.add_argument("--dry-run", action="store_true", help="Check and report; change nothing.")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Baseline even over versions the target's history shows undone (the schema lacks them).",
        )
        parser.add_argument("--reason", default="", help="Why a forced baseline is right; recorded in the history.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        with application_errors():
            selection = services.baseline_selection(tenant=options["tenant"], connection=options["connection"])
            report = services.target_baseline(
                selection=selection,
                version=options["baseline_version"],
                actor=cli_actor(),
                dry_run=options["dry_run"],
                force=options["force"],
                reason=options["reason"],
            )
        if options["json"]:
            self.stdout.write(to_json(report))
            return
        for target in report["targets"]:
            pending = ", ".join(target["pending_after"]) or "nothing"
            self.stdout.write(f"{target['target']:<50} {target['status']:<10} {target['message']}; next run: {pending}")
            for warning in target["warnings"]:
                self.stdout.write(f"    warning: {warning}")
