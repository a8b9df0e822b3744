"""Test the connectivity of registered connections now and store each result as its health snapshot."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections import selectors, services
from connections.models import DatabaseConnection
from connections.probe import ProbeResult
from infra_site.cli import to_json


def _line(connection: DatabaseConnection, result: ProbeResult) -> str:
    if result.ok:
        return f"ok      {connection.name}  {result.response_time_ms} ms  {result.server_version}"
    error = " ".join(connection.error.split())  # libpq's messages span lines
    return f"FAILED  {connection.name}  {result.cause}: {result.description}  {error}"


def _as_dict(connection: DatabaseConnection, result: ProbeResult) -> dict[str, Any]:
    return {
        "name": connection.name,
        "ok": result.ok,
        "cause": result.cause,
        "error": connection.error,  # redacted with the connection's own password too
        "response_time_ms": result.response_time_ms,
        "server_version": result.server_version,
    }


class Command(BaseCommand):
    help = "Test all live, active connections (or the ones named); exit status 1 when any is unhealthy."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name", dest="names", action="append", help="Test only this connection (repeatable; active or not)."
        )
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print a JSON list.")

    def handle(self, *args: Any, names: list[str] | None, as_json: bool, **options: Any) -> None:
        if names:
            connections = list(selectors.connection_list(names=names))
            missing = sorted(set(names) - {connection.name for connection in connections})
            if missing:
                raise CommandError(f"No connection named {', '.join(missing)}.")
        else:
            connections = list(selectors.connection_list(is_active=True))
        results = services.connection_test_many(connections=connections)
        failed = [connection.name for connection, result in results if not result.ok]
        if as_json:
            self.stdout.write(to_json([_as_dict(connection, result) for connection, result in results]))
        elif not results:
            self.stdout.write("No connections to test.")
        else:
            for connection, result in results:
                self.stdout.write(_line(connection, result), self.style.SUCCESS if result.ok else self.style.ERROR)
            self.stdout.write(f"{len(results)} tested: {len(results) - len(failed)} healthy, {len(failed)} unhealthy.")
        if failed:
            raise CommandError(f"Unhealthy: {', '.join(failed)}.")
