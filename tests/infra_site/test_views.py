"""Project-level views and entry points: the home redirect, error pages (JSON under /api/ and /health/), and
the WSGI and ASGI applications serving a request."""

from __future__ import annotations

import asyncio
import json
from wsgiref.util import setup_testing_defaults

import pytest
from django.test import RequestFactory

from infra_site import views


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


def test_the_wsgi_application_serves_the_liveness_check():
    from infra_site.wsgi import application

    environ: dict = {"PATH_INFO": "/health/", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    started: list = []
    body = b"".join(application(environ, lambda status, headers: started.append(status)))
    assert started == ["200 OK"]
    assert json.loads(body)["status"] == "healthy"


def test_the_asgi_application_serves_the_liveness_check():
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
