"""Register a database connection after testing it; the password never has to be on the command line."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from connections import services
from connections.models import AuthMethods, DatabaseConnection, DatabaseType, SslMode
from connections.serializers import DatabaseConnectionSerializer
from infra_site.cli import application_errors, cli_actor, to_json

# Options whose destinations are the connection's editable fields, passed to the service as they are: all of
# them but the password (read from its own sources below) and is_active (a new connection is active).
CONNECTION_OPTIONS = tuple(name for name in services.EDITABLE_FIELDS if name not in ("password", "is_active"))


class Command(BaseCommand):
    help = (
        "Register a database connection after a connectivity check. The password comes from "
        "--password-env VAR, --password-stdin or a prompt."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--type", dest="database_type", required=True, choices=DatabaseType.values)
        parser.add_argument("--host", required=True)
        parser.add_argument("--port", type=int, default=5432)
        parser.add_argument("--database", dest="database_name", required=True)
        parser.add_argument("--username", required=True)
        parser.add_argument("--region", default="")
        parser.add_argument("--ssl-mode", choices=SslMode.values, default=SslMode.PREFER)
        parser.add_argument(
            "--auth-methods",
            choices=AuthMethods.values,
            default=AuthMethods.SCRAM,
            help="Authentication methods the server may ask for (libpq require_auth); md5 and password need "
            "--ssl-mode=verify-full.",
        )
        parser.add_argument("--connect-timeout", type=int, default=5, help="Seconds.")
        parser.add_argument("--default-schema", default="public")
        parser.add_argument("--no-verify", dest="verify", action="store_false", help="Register it untested.")
        parser.add_argument("--json", dest="as_json", action="store_true", help="Print the connection as JSON.")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--password-env", metavar="VAR", help="Name of the environment variable with the password.")
        source.add_argument(
            "--password-stdin", action="store_true", help="Read the password from the first line of stdin."
        )
        source.add_argument("--password", help="Visible in the process list: for scripted development use only.")

    def handle(self, *args: Any, verify: bool, as_json: bool, **options: Any) -> None:
        values = {key: options[key] for key in CONNECTION_OPTIONS}
        password = self._password(options)
        with application_errors():
            connection = services.connection_create(actor=cli_actor(), verify=verify, password=password, **values)
        if as_json:
            self.stdout.write(to_json(DatabaseConnectionSerializer(connection).data))
        else:
            self.stdout.write(self._summary(connection), self.style.SUCCESS)

    def _password(self, options: dict[str, Any]) -> str:
        stdin = options.get("stdin") or sys.stdin
        if options["password_env"]:
            try:
                return os.environ[options["password_env"]]
            except KeyError:
                raise CommandError(f"The environment variable {options['password_env']} is not set.") from None
        if options["password_stdin"]:
            line = stdin.readline()
            if not line:
                raise CommandError("--password-stdin: nothing was read from stdin.")
            return line.rstrip("\r\n")
        if options["password"] is not None:
            self.stderr.write(
                "Warning: --password is visible in the process list and the shell history; "
                "prefer --password-env or --password-stdin."
            )
            return options["password"]
        if stdin.isatty():
            return getpass.getpass("Password: ")
        raise CommandError("No password: pass --password-env VAR or --password-stdin (stdin is not a terminal).")

    def _summary(self, connection: DatabaseConnection) -> str:
        if connection.checked_at is None:
            return f"Registered {connection.name} ({connection.id}) without testing it."
        return (
            f"Registered {connection.name} ({connection.id}): {connection.server_version}, "
            f"answered in {connection.response_time_ms} ms."
        )
