"""Project-level views and entry points: the home redirect, error pages (JSON under /api/ and /health/), and
the WSGI and ASGI applications serving a request."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pytest
from django.db import connections
from django.test import RequestFactory

from infra_site import views
from tests.support.tools import coverage_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Importing an entry point freezes the objects of start-up (``infra_site.serving``): not the suite's. And a
    request through an entry point checks the thread's database connection first (``close_old_connections``): one
    an earlier test of this process left open is closed, so the request starts as a server's first would."""
    connections.close_all()
    yield
    gc.unfreeze()


@pytest.mark.parametrize("entry", ["infra_site.wsgi", "infra_site.asgi"])
def test_an_entry_point_loads_the_urls_and_freezes_the_objects_of_start_up(entry, tmp_path):
    code = (
        f"import gc, sys, {entry}\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()), 'rest_framework.views' in sys.modules, "
        "'migrations_runner.api' in sys.modules)"
    )
    env = {
        "PATH": os.environ["PATH"],
        **coverage_env(),
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ENVIRONMENT": "testing",
        "ENV_FILE": os.devnull,
        "ADMIN_DATABASE_URL": f"sqlite:///{tmp_path / 'control.sqlite3'}",
    }
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    frozen, tracked, framework, views_loaded = result.stdout.split()
    # The URLconf's modules are loaded, and start-up's objects (over 50,000) left out of collections.
    assert (framework, views_loaded) == ("True", "True")
    assert int(frozen) > 50_000
    assert int(tracked) < int(frozen) // 10


def test_the_home_page_redirects_to_the_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


@pytest.mark.parametrize("path", ["/api/v1/databases/", "/health/detailed"])
def test_a_server_error_under_the_api_is_json(path):
    response = views.server_error(RequestFactory().get(path))
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {
        "error": "internal_error",
        "message": "An unexpected error occurred; it has been logged.",
        "details": {},
    }


def test_a_server_error_elsewhere_is_the_html_page():
    response = views.server_error(RequestFactory().get("/admin/"))
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


def test_an_unknown_api_path_is_a_json_404_and_an_unknown_page_is_html(client):
    api = client.get("/api/v1/no-such-thing/")
    assert api.status_code == 404
    assert api.json() == {"error": "not_found", "message": "No endpoint at /api/v1/no-such-thing/.", "details": {}}
    page = client.get("/no-such-page/")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")


def test_the_wsgi_application_serves_the_liveness_check(unfrozen):
    from infra_site.wsgi import application

    environ: dict = {"PATH_INFO": "/health/", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    started: list = []
    body = b"".join(application(environ, lambda status, headers: started.append(status)))
    assert started == ["200 OK"]
    assert json.loads(body)["status"] == "healthy"


def test_the_asgi_application_serves_the_liveness_check(unfrozen):
    from infra_site.asgi import application

    sent: list[dict] = []
    requested = False
    answered = asyncio.Event()

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}  # the client leaves once it has the whole response

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/health/",
        "raw_path": b"/health/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(application(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["status"] == "healthy"
