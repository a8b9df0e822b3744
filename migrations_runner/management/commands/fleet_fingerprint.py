"""Show the fleet's schema fingerprints: the majority of each set version, and the targets that drifted from it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from infra_site.cli import ProgressBar, application_errors, to_json
from migrations_runner import services
from migrations_runner.selection import TargetSelection
from migrations_runner.selectors.fingerprints import fingerprint_report


class Command(BaseCommand):
    help = (
        "Group the targets by set version and schema fingerprint, name each version's majority, and list the "
        "outliers with their diff. Uses the fingerprints recorded after each run unless --scan. Exit status 1 "
        "when outliers exist."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scan", action="store_true", help="Fingerprint the selected targets now first.")
        parser.add_argument("--region", action="append", default=[], help="Narrow to a region (repeatable).")
        parser.add_argument("--connection", action="append", default=[], help="Narrow to a connection (repeatable).")
        parser.add_argument("--tenant", action="append", default=[], help="Narrow to a tenant slug (repeatable).")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        as_json = options["json"]
        scan = None
        with application_errors():
            selection = TargetSelection(
                regions=options["region"], connections=options["connection"], tenants=options["tenant"]
            )
            if options["scan"]:
                bar = None if as_json else ProgressBar(self.stdout, 0, tty=self.stdout.isatty())
                scan = services.fleet_fingerprint_scan(
                    selection=selection,
                    on_start=(lambda total: setattr(bar, "total", total)) if bar else None,
                    on_progress=bar.advance if bar else None,
                )
                if bar:
                    bar.close()
            report = fingerprint_report(selection)
        data = report.as_dict() | ({"scan": scan.as_dict()} if scan else {})
        if as_json:
            self.stdout.write(to_json(data))
        else:
            self._report(data)
        if report.outliers:
            raise CommandError(f"{len(report.outliers)} target(s) differ from their version's majority.", returncode=1)

    def _report(self, data: dict) -> None:
        scan = data.get("scan")
        if scan:
            self.stdout.write(f"Scanned {scan['scanned']} target(s) in {scan['seconds']:.1f}s.")
            for database in scan["unreachable"]:
                self.stdout.write(
                    f"  unreachable: {database['connection']} ({database['targets']}): {database['error']}"
                )
        self.stdout.write(f"{'TYPE':<10} {'VERSION':>8} {'TARGETS':>7} {'OUTLIERS':>8}  MAJORITY")
        for group in data["groups"]:
            tie = "  (tie: no clear majority)" if group["tied"] else ""
            self.stdout.write(
                f"{group['database_type']:<10} {group['version'] or '-':>8} {group['targets']:>7} "
                f"{group['outliers']:>8}  {group['majority'][:12]}{tie}"
            )
        for outlier in data["outliers"]:
            self.stdout.write(
                f"\n{outlier['target']} (version {outlier['version'] or '-'}): {outlier['fingerprint'][:12]}, "
                f"majority {outlier['majority'][:12]} ({outlier['majority_targets']} target(s))"
            )
            for entry in outlier["diff"]:
                self.stdout.write(f"    {entry['text']}")
        self.stdout.write(f"\n{data['targets']} target(s) with a fingerprint, {data['outlier_count']} outlier(s).")
