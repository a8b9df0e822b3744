"""Start the demo: an embedded PostgreSQL with a registered, migrated fleet, then the web server and a task worker."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.urls import reverse

from console import demo
from infra_site.cli import ProgressBar, application_errors

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Command(BaseCommand):
    help = (
        "Start an embedded PostgreSQL under DEMO_DATA_DIR with a demo fleet (registered and migrated), create an "
        "operator account, then serve the admin with a task worker. Run again, it reuses all of it. Ctrl-C stops all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--workers", type=int, default=settings.WORKERS)
        parser.add_argument("--tenants-per-region", type=int, default=demo.TENANTS_PER_REGION)

    def handle(self, *args, host: str, port: int, workers: int, tenants_per_region: int, **options) -> None:
        if not 1 <= tenants_per_region <= 1000:
            raise CommandError("--tenants-per-region must be between 1 and 1000.")
        # SIGTERM and SIGHUP (terminal closed) stop the demo as Ctrl-C does: through the finally blocks that stop
        # the embedded server. While serving, gunicorn handles them (SIGHUP reloads its workers).
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.default_int_handler)
        root = logging.getLogger()
        level = root.level
        if options["verbosity"] < 2:
            root.setLevel(logging.WARNING)  # a log line per target and tenant would bury the progress bar
        data_dir = settings.DEMO_DATA_DIR
        try:
            with application_errors(), demo.demo_postgres(data_dir=data_dir) as server:
                self.stdout.write(f"PostgreSQL (embedded) on {server.host}:{server.port}, data in {data_dir}")
                password = demo.databases_ensure(server=server, data_dir=data_dir)
                fleet = demo.fleet_register(server=server, password=password, tenants_per_region=tenants_per_region)
                self.stdout.write(
                    f"Fleet: {len(fleet.connections)} databases ({fleet.connections_created} registered now), "
                    f"{fleet.tenants_created} tenant(s) registered now."
                )
                self._operator()
                self._migrate(fleet)
                base = f"http://{host}:{port}"
                if late := demo.late_tenants_ensure(connections=fleet.connections):
                    run = reverse("admin:migrations_runner_migrationexecution_run")
                    self.stdout.write(f"{late} tenants (new_*) registered since, not migrated: run them at {base}{run}")
                root.setLevel(level)
                self._close_database_connections()
                self.stdout.write(f"Admin: {base}/admin/  (Ctrl-C stops everything)")
                try:
                    call_command("serve", host=host, port=port, workers=workers)
                finally:
                    # gunicorn's SIGCHLD handler reaps every child, which would steal pg_ctl's exit status.
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        except KeyboardInterrupt:
            raise CommandError("Interrupted.", returncode=130) from None

    @staticmethod
    def _close_database_connections() -> None:
        """Close the control database's connections (and pool): gunicorn forks its workers next."""
        for connection in connections.all(initialized_only=True):
            connection.close()
            if hasattr(connection, "close_pool"):  # PostgreSQL with a pool: its threads would not survive the fork
                connection.close_pool()

    def _operator(self) -> None:
        user, password = demo.operator_ensure()
        if password:
            self.stdout.write(
                f"Operator account (infrastructure:admin): {user.username} / {password}\n"
                f"  Shown this once: keep it (`manage.py changepassword {user.username}` sets a new one)."
            )
        else:
            self.stdout.write(f"Operator account: {user.username} (its password was shown when it was created).")

    def _migrate(self, fleet: demo.FleetReport) -> None:
        stop = threading.Event()

        def request_stop(signum, frame) -> None:
            stop.set()
            with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
                self.stderr.write("\nCancelling the migration (Ctrl-C again to stop at once)...")
            signal.signal(signal.SIGINT, signal.default_int_handler)

        for signum in (signal.SIGINT, *STOP_SIGNALS):
            signal.signal(signum, request_stop)
        try:
            execution = demo.fleet_migrate(
                connections=fleet.connections,
                progress=lambda total: ProgressBar(self.stdout, total, tty=self.stdout.isatty()),
                stop_requested=stop.is_set,
            )
        finally:
            for signum in (signal.SIGINT, *STOP_SIGNALS):
                signal.signal(signum, signal.default_int_handler)
        if stop.is_set():
            raise CommandError(
                "Interrupted: the migration was cancelled; run the demo again to finish it.", returncode=130
            )
        if execution is None:
            self.stdout.write("Migrations: the fleet is up to date.")
            return
        self.stdout.write(
            f"Migrations: execution {execution.pk} {execution.status}: {execution.targets_succeeded} succeeded, "
            f"{execution.targets_failed} failed, {execution.targets_skipped} skipped."
        )
