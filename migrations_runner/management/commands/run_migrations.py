"""Run migrations across the fleet (or plan them with --dry-run)."""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from infra_site.cli import ProgressBar, application_errors, cli_actor, to_json
from migrations_runner import selectors, services
from migrations_runner.models import (
    FINISHED_TARGET_STATUSES,
    ExecutionStatus,
    MigrationExecution,
    OnFailure,
    Origin,
    Scope,
    Waiting,
)
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection

# How the command names the options in its errors.
FLAGS = {
    "dry_run": "--dry-run",
    "on_failure": "--on-failure",
    "batch_size": "--batch-size",
    "statement_timeout_s": "--statement-timeout",
    "lock_timeout_s": "--lock-timeout",
    "out_of_order": "--out-of-order",
    "waves": "--waves",
    "failure_budget": "--failure-budget",
    "wave_pause": "--wave-pause",
    "wave_approval": "--wave-approval",
    "canary": "--canary",
}


class _Follower:
    """Reports the target runs of a running execution as they end, with a progress bar; nothing when ``quiet``
    (the JSON summary at the end says it all), and then it reads nothing either.

    Runs are claimed in key order, so those ending are found above a frontier: the lowest key of a run not yet
    ended. A poll reads the runs ended above it that it has not reported (those it has are few: the runs that
    ended before a run below them), then moves the frontier up, so that what a poll reads and sends does not
    grow with the runs ended before it. Runs up to date at planning time ended then (their end is the
    execution's start) and are not reported.
    """

    def __init__(self, stdout, *, quiet: bool) -> None:
        self.stdout, self.quiet = stdout, quiet
        self.bar: ProgressBar | None = None
        self.frontier = 0  # every run below this key has ended (and was reported, unless planned so)
        self.reported: set[int] = set()  # runs at or above the frontier reported already

    def _start(self, execution: MigrationExecution) -> ProgressBar:
        planned = execution.targets.filter(status__in=FINISHED_TARGET_STATUSES, completed_at__lte=execution.started_at)
        return ProgressBar(self.stdout, execution.targets_total - planned.count(), tty=self.stdout.isatty())

    def step(self, execution: MigrationExecution) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self.bar = self._start(execution)
        runs = execution.targets.filter(pk__gte=self.frontier)
        # The frontier first: every run below it has ended before the runs ended are read, so none is passed over.
        first_open = runs.exclude(status__in=FINISHED_TARGET_STATUSES).order_by("pk").values_list("pk", flat=True)
        frontier = first_open.first()
        ended = (
            runs.filter(status__in=FINISHED_TARGET_STATUSES)
            .exclude(completed_at__lte=execution.started_at)
            .exclude(pk__in=self.reported)
            .select_related("connection")
            .order_by("pk")
        )
        for run in ended:
            self.reported.add(run.pk)
            self.bar.advance(run.label, run.status)
        if frontier is None:  # every run had ended: none above the last one reported is left to report
            frontier = max(self.reported | {self.frontier - 1}) + 1
        self.frontier = frontier
        self.reported = {pk for pk in self.reported if pk >= self.frontier}

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _untouched(target: dict) -> bool:
    """A target run that found its target up to date: succeeded, nothing applied, no error."""
    return target["status"] == "succeeded" and not target["applied"] and not target["error"]


def _approval_hint(execution: MigrationExecution) -> str:
    wave = execution.approved_wave + 1
    return (
        f"Execution {execution.pk} is awaiting approval before wave {wave}: "
        f"manage.py continue_execution {execution.pk} (or --abort)."
    )


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
        parser.add_argument(
            "--statement-timeout", type=int, default=None, help="Seconds a statement may run (MIGRATION_TIMEOUT)."
        )
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=None,
            help="Seconds a statement may wait for a table lock (MIGRATION_LOCK_TIMEOUT).",
        )
        parser.add_argument(
            "--out-of-order",
            action="store_true",
            help="Apply pending versions below a target's highest applied version (else such a target is refused).",
        )
        parser.add_argument("--sync", action="store_true", help="Run in this process instead of on the queue workers.")
        parser.add_argument("--wait", action="store_true", help="Follow a queued execution until it ends.")
        parser.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")
        waves = parser.add_argument_group("canary waves (tenant targets with work)")
        waves.add_argument(
            "--waves",
            type=_csv,
            default=[],
            help="Wave sizes or percentages, e.g. 1,10,50%%; the rest is a last wave.",
        )
        waves.add_argument("--failure-budget", default=None, help="Failures a wave may have: 0 (default), 2 or 5%%.")
        waves.add_argument("--wave-pause", type=int, default=None, help="Soak seconds between two waves.")
        waves.add_argument("--wave-approval", action="store_true", help="Wait for continue_execution before each wave.")
        waves.add_argument("--canary", action="append", default=[], help="A tenant of the first wave (repeatable).")

    def handle(self, *args: Any, **options: Any) -> None:
        as_json = options["json"]
        with application_errors():
            selection = TargetSelection(
                scope=options["scope"],
                regions=options["region"],
                connections=options["connection"],
                tenants=options["tenant"],
            )
            run_options = ExecutionOptions.parse(
                dry_run=options["dry_run"],
                on_failure=options["on_failure"],
                batch_size=options["batch_size"],
                statement_timeout_s=options["statement_timeout"],
                lock_timeout_s=options["lock_timeout"],
                out_of_order=options["out_of_order"],
                waves=options["waves"],
                failure_budget=options["failure_budget"],
                wave_pause=options["wave_pause"],
                wave_approval=options["wave_approval"],
                canary=options["canary"],
                names=FLAGS,
            )
        start = partial(
            services.execution_start, selection=selection, options=run_options, actor=cli_actor(), origin=Origin.COMMAND
        )
        with application_errors():
            if options["dry_run"]:
                execution = start()
            elif options["sync"]:
                follow = _Follower(self.stdout, quiet=as_json)
                execution = start(wait=True, on_poll=follow.step)
                follow.step(execution)
                follow.close()
            else:
                execution = start()
                if not options["wait"]:
                    self.stdout.write(
                        to_json(selectors.execution_summary(execution=execution))
                        if as_json
                        else f"Execution {execution.pk} queued."
                    )
                    return
                follow = _Follower(self.stdout, quiet=as_json)
                follow.step(execution)
                told = False
                while not execution.is_finished:
                    time.sleep(options["poll"])
                    execution.refresh_from_db()
                    follow.step(execution)
                    if execution.waiting == Waiting.APPROVAL and not told and not as_json:
                        self.stderr.write(_approval_hint(execution))
                    told = execution.waiting == Waiting.APPROVAL
                follow.step(execution)
                follow.close()
        data = selectors.execution_summary(execution=execution)
        if as_json:
            self.stdout.write(to_json(data))
        else:
            self._report(data, verbosity=options["verbosity"])
        if execution.waiting == Waiting.APPROVAL and not as_json:
            self.stdout.write(_approval_hint(execution))
        if data["progress"]["failed"] or execution.status == ExecutionStatus.FAILED:
            raise CommandError(f"Execution {execution.pk} {execution.status}.", returncode=1)

    def _report(self, data: dict, *, verbosity: int = 1) -> None:
        progress = data["progress"]
        # A fleet's targets that were up to date are counted, not listed (-v 2 lists them).
        quiet = [] if verbosity > 1 or data["dry_run"] else [t for t in data["targets"] if _untouched(t)]
        for target in data["targets"] if not quiet else [t for t in data["targets"] if not _untouched(t)]:
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
        if quiet:
            self.stdout.write(f"{len(quiet)} target(s) already up to date (-v 2 lists them).")
        self.stdout.write(
            f"Execution {data['id']} {data['status']}: {progress['total']} target(s), {progress['completed']} "
            f"succeeded, {progress['failed']} failed, {progress['skipped']} skipped, {progress['cancelled']} cancelled."
        )
