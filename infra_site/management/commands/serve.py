"""Serve the admin and the API with gunicorn on HOST:PORT with WORKERS processes."""

from __future__ import annotations

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
    help = "Serve the control plane over HTTP (gunicorn), on HOST:PORT with WORKERS processes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--workers", type=int, default=settings.WORKERS)

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        self.stdout.write(f"Serving on http://{host}:{port}/ with {workers} worker(s); admin at /admin/")
        _Server(
            {
                "bind": f"{host}:{port}",
                "workers": workers,
                "accesslog": "-",
                "timeout": 120,
                "graceful_timeout": 20,
            }
        ).run()
