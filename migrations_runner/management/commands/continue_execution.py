"""Continue (or abort) an execution that is awaiting approval between two canary waves."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from infra_site.cli import application_errors, cli_actor, to_json
from migrations_runner import selectors, services
from migrations_runner.serializers import WaveProgressSerializer


class Command(BaseCommand):
    requires_system_checks = ["migrations"]
    help = (
        "Approve the next canary wave of an execution awaiting approval and start it on the queue workers; "
        "--abort cancels the waves not started instead. Exit status 1 when the execution is not awaiting approval."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("execution_id", help="The execution awaiting approval.")
        parser.add_argument("--abort", action="store_true", help="Cancel the waves not started.")
        parser.add_argument("--json", action="store_true", help="Print the execution's progress per wave as JSON.")

    def handle(self, *args: Any, execution_id: str, **options: Any) -> None:
        with application_errors():
            execution = selectors.execution_get(execution_id=execution_id)
            if options["abort"]:
                execution = services.execution_abort(execution=execution, actor=cli_actor())
            else:
                execution = services.execution_continue(execution=execution, actor=cli_actor())
        waves = selectors.execution_waves(execution=execution)
        if options["json"]:
            shown = WaveProgressSerializer(waves, many=True).data
            self.stdout.write(to_json({"id": execution.pk, "status": execution.status, "waves": shown}))
            return
        verb = "aborted" if options["abort"] else "continued"
        self.stdout.write(f"Execution {execution.pk} {verb}: {execution.status}.")
        for wave in waves:
            self.stdout.write(
                f"  wave {wave.wave:>2} {wave.state:<18} {wave.size:>6} target(s): {wave.succeeded} "
                f"succeeded, {wave.failed} failed, {wave.skipped} skipped, {wave.pending} pending"
            )
