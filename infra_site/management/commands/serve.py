"""Serve the admin and the API with gunicorn on HOST:PORT with WORKERS processes, and a qcluster beside it."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from gunicorn.app.base import BaseApplication

from infra_site.wsgi import application


class _Server(BaseApplication):
    def __init__(self, options: dict) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return application


class Command(BaseCommand):
    help = "Serve the control plane over HTTP (gunicorn) on HOST:PORT with WORKERS processes, and a task worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--workers", type=int, default=settings.WORKERS)
        parser.add_argument(
            "--no-task-worker",
            action="store_true",
            help="Do not start a qcluster beside the web server (run it elsewhere).",
        )

    def handle(self, *args, host: str, port: int, workers: int, no_task_worker: bool, **options) -> None:
        cluster = None
        if not no_task_worker:
            # Queued executions need a worker; without one they would wait (and say so) until one starts.
            cluster = subprocess.Popen([sys.executable, sys.argv[0], "qcluster"])
            self.stdout.write(f"Task worker (qcluster) started, pid {cluster.pid}")

        def stop_cluster(_server) -> None:
            if cluster is None or cluster.poll() is not None:
                return
            cluster.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                cluster.wait(timeout=15)
                return
            cluster.kill()
            cluster.wait(timeout=10)

        self.stdout.write(f"Serving on http://{host}:{port}/ with {workers} worker(s); admin at /admin/")
        try:
            _Server(
                {
                    "bind": f"{host}:{port}",
                    "workers": workers,
                    "accesslog": "-",
                    "timeout": 120,
                    "graceful_timeout": 20,
                    "on_exit": stop_cluster,
                    # gunicorn's control socket defaults to one path per account ($HOME/.gunicorn/gunicorn.ctl):
                    # a second instance would take it over from the first. Nothing here uses gunicornc.
                    "control_socket_disable": True,
                }
            ).run()
        finally:
            stop_cluster(None)
