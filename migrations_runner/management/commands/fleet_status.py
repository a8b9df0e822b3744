"""Show each target's version, pending versions and drift."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from infra_site.cli import application_errors, to_json
from migrations_runner.selection import TargetSelection
from migrations_runner.selectors.fleet import fleet_status_live
from migrations_runner.serializers import TargetPlanSerializer, unredacted_context


class Command(BaseCommand):
    help = "Show every target's current version, pending versions and drift. Exit status 1 on drift or errors."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--region", action="append", default=[])
        parser.add_argument("--connection", action="append", default=[])
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        with application_errors():
            rows = fleet_status_live(TargetSelection(regions=options["region"], connections=options["connection"]))
        if options["json"]:
            self.stdout.write(to_json(TargetPlanSerializer(rows, many=True, context=unredacted_context()).data))
        else:
            self.stdout.write(f"{'TARGET':<50} {'TYPE':<10} {'REGION':<10} {'VERSION':>8} {'PENDING':>7}  STATE")
            for row in rows:
                state = (
                    "unreachable: " + row.error
                    if row.error
                    else (
                        "DRIFT: " + "; ".join(row.drift) if row.drift else ("behind" if row.pending else "up to date")
                    )
                )
                self.stdout.write(
                    f"{row.target:<50} {row.database_type:<10} {row.region or '-':<10} "
                    f"{row.current_version or '-':>8} {len(row.pending):>7}  {state}"
                )
            behind = sum(1 for row in rows if row.pending)
            self.stdout.write(
                f"{len(rows)} target(s), {behind} behind, "
                f"{sum(1 for row in rows if row.drift or row.error)} with drift or errors."
            )
        if any(row.drift or row.error for row in rows):
            raise CommandError("Some targets have drift or could not be read.", returncode=1)
