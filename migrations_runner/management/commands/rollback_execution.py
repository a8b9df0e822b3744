"""Roll back what an execution applied, or one target to a version."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections import selectors as registry
from infra_site.cli import application_errors, cli_actor, to_json
from migrations_runner import selectors, services
from migrations_runner.models import ExecutionStatus, Origin


class Command(BaseCommand):
    # Only this app's checks (dependency DAG, sets): the URL, admin and model checks add start-up time.
    requires_system_checks = ["migrations"]
    help = (
        "Undo an execution's versions with the undo scripts (newest first), or with --connection, --schema and "
        "--to-version one target down to a version. Refused, changing nothing, when an undo script is missing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("execution_id", nargs="?", help="The execution to roll back.")
        parser.add_argument("--connection", help="Roll back one target: its connection name.")
        parser.add_argument("--schema", help="Roll back one target: its schema.")
        parser.add_argument("--to-version", help="Roll back one target: the version to return to (0 for none).")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, execution_id: str | None, **options: Any) -> None:
        single = [options["connection"], options["schema"], options["to_version"]]
        if bool(execution_id) == any(single):
            raise CommandError("Give an execution id, or --connection, --schema and --to-version (not both).")
        with application_errors():
            if execution_id:
                original = selectors.execution_get(execution_id=execution_id)
                rollback = services.execution_rollback(
                    execution=original, actor=cli_actor(), origin=Origin.COMMAND, wait=True
                )
            else:
                if not all(single):
                    raise CommandError("--connection, --schema and --to-version go together.")
                connection = registry.connection_get_by_name(name=options["connection"])
                rollback = services.target_rollback(
                    connection=connection,
                    schema=options["schema"],
                    to_version=options["to_version"],
                    actor=cli_actor(),
                    origin=Origin.COMMAND,
                    wait=True,
                )
        data = selectors.execution_summary(execution=rollback)
        if options["json"]:
            self.stdout.write(to_json(data))
        else:
            for target in data["targets"]:
                self.stdout.write(
                    f"{target['target']:<50} {target['status']:<10} undone: {', '.join(target['applied'])}"
                )
            self.stdout.write(f"Rollback {data['id']} {data['status']}.")
        if rollback.status != ExecutionStatus.COMPLETED:
            raise CommandError(f"Rollback {rollback.pk} {rollback.status}.", returncode=1)
