"""Run migrations across the fleet (or plan them with --dry-run)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from infra_site.cli import ProgressBar, application_errors, cli_actor, to_json
from migrations_runner import selectors, services
from migrations_runner.models import FINISHED_TARGET_STATUSES, OnFailure, Scope, TargetRun, TargetStatus


def summary(execution) -> dict:
    """The JSON summary of an execution: status, progress and each target run."""
    runs = selectors.execution_targets(execution=execution)
    return {
        "id": str(execution.pk),
        "kind": execution.kind,
        "status": execution.status,
        "scope": execution.scope,
        "dry_run": execution.dry_run,
        "started_at": execution.started_at,
        "completed_at": execution.completed_at,
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
                "worker": run.worker or None,
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
        parser.add_argument("--sync", action="store_true", help="Run in this process instead of on the queue workers.")
        parser.add_argument("--wait", action="store_true", help="Follow a queued execution until it ends.")
        parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
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

        params = {
            "scope": options["scope"],
            "regions": options["region"],
            "connections": options["connection"],
            "tenants": options["tenant"],
            "dry_run": options["dry_run"],
            "on_failure": options["on_failure"],
            "batch_size": options["batch_size"],
            "executed_by": cli_actor(),
        }
        with application_errors():
            if options["sync"] or options["dry_run"]:
                execution = services.execution_start(**params, on_target_done=on_target_done)
            else:
                execution = services.execution_submit(**params)
                if not options["wait"]:
                    self.stdout.write(to_json(summary(execution)) if as_json else f"Execution {execution.pk} queued.")
                    return
                execution = self._follow(execution, on_target_done, options["poll"])
        if bar:
            bar.close()
        data = summary(execution)
        if as_json:
            self.stdout.write(to_json(data))
        else:
            self._report(data)
        if data["progress"]["failed"] or execution.status == "failed":
            sys.exit(1)

    def _follow(self, execution, on_target_done, poll: float):
        """Poll a queued execution until it finishes, reporting each target as it ends."""
        seen: set[int] = set()
        while True:
            execution.refresh_from_db()
            finished = (
                execution.targets.select_related("connection", "execution")
                .exclude(pk__in=seen)
                .filter(status__in=FINISHED_TARGET_STATUSES, started_at__isnull=False)
            )
            for run in finished:
                seen.add(run.pk)
                on_target_done(run)
            if execution.is_finished:
                return execution
            time.sleep(poll)

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
