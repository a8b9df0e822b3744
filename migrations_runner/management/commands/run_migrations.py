"""Run migrations across the fleet (or plan them with --dry-run)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from infra_site.cli import ProgressBar, application_errors, cli_actor, to_json
from migrations_runner import selectors, services
from migrations_runner.models import OnFailure, Scope, TargetRun, TargetStatus


def summary(execution) -> dict:
    """The JSON summary of an execution: status, progress and each target run."""
    runs = selectors.execution_targets(execution=execution)
    return {
        "id": str(execution.pk),
        "kind": execution.kind,
        "status": execution.status,
        "scope": execution.scope,
        "dry_run": execution.dry_run,
        "progress": selectors.execution_progress(execution=execution),
        "targets": [
            {
                "target": run.label,
                "database_type": run.database_type,
                "region": run.region,
                "phase": run.phase,
                "status": run.status,
                "from_version": run.from_version or None,
                "to_version": run.to_version or None,
                "pending": run.pending_versions,
                "applied": [a["version"] or a["script"] for a in run.applied_versions],
                "error": run.error,
                "skip_reason": run.skip_reason or None,
            }
            for run in runs
        ],
    }


class Command(BaseCommand):
    # Only this app's checks (dependency DAG, sets): the URL, admin and model checks add start-up time.
    requires_system_checks = ["migrations"]
    help = "Run migrations over a scope of the fleet. Exit status 1 when a target failed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--scope", choices=Scope.values, default=Scope.ALL)
        parser.add_argument("--region", action="append", default=[], help="Narrow to a region (repeatable).")
        parser.add_argument("--connection", action="append", default=[], help="Narrow to a connection (repeatable).")
        parser.add_argument("--tenant", action="append", default=[], help="Narrow to a tenant slug (repeatable).")
        parser.add_argument("--dry-run", action="store_true", help="Show the pending versions per target only.")
        parser.add_argument("--on-failure", choices=OnFailure.values, default=OnFailure.CONTINUE)
        parser.add_argument("--batch-size", type=int, default=None, help="Targets in flight at once.")
        parser.add_argument("--sync", action="store_true", help="Run in this process (the default for now).")
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] is not None and not 1 <= options["batch_size"] <= 500:
            raise CommandError("--batch-size must be between 1 and 500.")
        as_json = options["json"]
        bar: ProgressBar | None = None

        def on_target_done(run: TargetRun) -> None:
            nonlocal bar
            if as_json:
                return
            if bar is None:
                total = run.execution.targets.exclude(status=TargetStatus.SUCCEEDED, started_at__isnull=True).count()
                bar = ProgressBar(self.stdout, total, tty=self.stdout.isatty())
            bar.advance(f"{run.connection.name}/{run.schema_name}", run.status)

        with application_errors():
            execution = services.execution_start(
                scope=options["scope"],
                regions=options["region"],
                connections=options["connection"],
                tenants=options["tenant"],
                dry_run=options["dry_run"],
                on_failure=options["on_failure"],
                batch_size=options["batch_size"],
                executed_by=cli_actor(),
                on_target_done=on_target_done,
            )
        if bar:
            bar.close()
        data = summary(execution)
        if as_json:
            self.stdout.write(to_json(data))
        else:
            self._report(data)
        if data["progress"]["failed"] or execution.status == "failed":
            sys.exit(1)

    def _report(self, data: dict) -> None:
        progress = data["progress"]
        for target in data["targets"]:
            if data["dry_run"]:
                pending = ", ".join(target["pending"]) or "up to date"
                line = f"{target['target']:<50} {target['from_version'] or '-':>8}  pending: {pending}"
            else:
                line = f"{target['target']:<50} {target['status']:<10} {target['from_version'] or '-':>8} -> " + (
                    target["to_version"] or "-"
                )
            if target["error"]:
                error = target["error"]
                line += f"\n    {error.get('kind')}: {error.get('message')}"
                if error.get("sqlstate"):
                    line += f" [SQLSTATE {error['sqlstate']}] at {error.get('script')}"
                if error.get("statement"):
                    line += f"\n    statement: {error['statement'][:300]}"
            if target["skip_reason"]:
                line += f"\n    skipped: {target['skip_reason']}"
            self.stdout.write(line)
        self.stdout.write(
            f"Execution {data['id']} {data['status']}: {progress['total']} target(s), {progress['completed']} "
            f"succeeded, {progress['failed']} failed, {progress['skipped']} skipped, {progress['cancelled']} cancelled."
        )
