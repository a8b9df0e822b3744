"""List the registered (live) connections with their latest health snapshot."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from connections import selectors
from connections.models import DatabaseConnection, DatabaseType
from connections.serializers import DatabaseConnectionSerializer
from infra_site.cli import to_json

HEADERS = ("NAME", "TYPE", "REGION", "ADDRESS", "ACTIVE", "HEALTH", "MS", "CHECKED AT")


def _health(connection: DatabaseConnection) -> str:
    if connection.is_healthy is None:
        return "untested"
    return "ok" if connection.is_healthy else f"FAILED ({connection.error_cause or 'error'})"


def _row(connection: DatabaseConnection) -> tuple[str, ...]:
    checked_at = connection.checked_at
    return (
        connection.name,
        connection.database_type,
        connection.region or "-",
        connection.address,
        "yes" if connection.is_active else "no",
        _health(connection),
        "-" if connection.response_time_ms is None else f"{connection.response_time_ms:.1f}",
        timezone.localtime(checked_at).strftime("%Y-%m-%d %H:%M:%S") if checked_at else "-",
    )


class Command(BaseCommand):
    help = "List the registered connections (soft-deleted ones excluded) with their latest health check."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--type", dest="database_type", choices=DatabaseType.values)
        parser.add_argument("--region")
        active = parser.add_mutually_exclusive_group()
        active.add_argument("--active", dest="is_active", action="store_const", const=True)
        active.add_argument("--inactive", dest="is_active", action="store_const", const=False)
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print a JSON list.")

    def handle(
        self,
        *args: Any,
        database_type: str | None,
        region: str | None,
        is_active: bool | None,
        as_json: bool,
        **options: Any,
    ) -> None:
        connections = selectors.connection_list(database_type=database_type, region=region, is_active=is_active)
        if as_json:
            self.stdout.write(to_json(DatabaseConnectionSerializer(connections, many=True).data))
            return
        rows = [HEADERS, *(_row(connection) for connection in connections)]
        if len(rows) == 1:
            self.stdout.write("No connections.")
            return
        widths = [max(len(row[column]) for row in rows) for column in range(len(HEADERS))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
