"""The project's middleware: API paths served with or without their trailing slash, the body limit, and the
API's reads compressed for the clients that accept gzip."""

from __future__ import annotations

import gzip
import json

import pytest

from infra_site.middleware import ApiGzipMiddleware

pytestmark = pytest.mark.django_db


def test_an_api_path_without_its_trailing_slash_is_served_without_a_redirect(api_as):
    client = api_as("databases:read")
    with_slash = client.get("/api/v1/auth/me/")
    without = client.get("/api/v1/auth/me")
    assert with_slash.status_code == without.status_code == 200
    assert without.json() == with_slash.json()


def test_a_post_without_the_trailing_slash_keeps_its_body(api_as):
    client = api_as("databases:read")
    response = client.post("/api/v1/auth/me", {"x": 1}, format="json")
    assert response.status_code == 405  # reached the view (GET only), not a redirect that dropped the body
    assert response.json()["error"] == "method_not_allowed"


def test_a_body_declared_above_the_limit_is_refused_with_the_api_error_shape(api_as, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api_as("databases:read").get("/api/v1/auth/me/", CONTENT_LENGTH="1001")
    assert response.status_code == 413
    assert response.json() == {
        "error": "request_too_large",
        "message": "The request body is larger than 1000 bytes.",
        "details": {"max_bytes": 1000},
    }


def test_a_malformed_content_length_is_not_taken_for_a_large_body(api_as, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api_as("databases:read").get("/api/v1/auth/me/", CONTENT_LENGTH="lots")
    assert response.status_code == 200


def test_paths_outside_the_api_are_left_alone(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    assert client.get("/admin/login/", CONTENT_LENGTH="5000").status_code == 200
    assert client.get("/admin").status_code == 301  # Django's own APPEND_SLASH redirect, not ours


def _gunzipped_json(response):
    assert response["Content-Encoding"] == "gzip"
    assert int(response["Content-Length"]) == len(response.content)
    return json.loads(gzip.decompress(response.content))


def test_an_api_read_is_compressed_for_a_client_that_accepts_gzip(api_as, monkeypatch):
    monkeypatch.setattr(ApiGzipMiddleware, "MIN_BYTES", 10)  # the answer of /auth/me/ is smaller than the default
    client = api_as("databases:read")
    plain = client.get("/api/v1/auth/me/")
    packed = client.get("/api/v1/auth/me/", HTTP_ACCEPT_ENCODING="deflate, gzip;q=0.8")
    assert plain.status_code == packed.status_code == 200
    assert not plain.has_header("Content-Encoding")
    assert _gunzipped_json(packed) == plain.json()
    for response in (plain, packed):  # a cache keeps both forms apart
        assert "Accept-Encoding" in response["Vary"]


def test_a_small_api_answer_is_sent_as_it_is(api_as):
    response = api_as("databases:read").get("/api/v1/auth/me/", HTTP_ACCEPT_ENCODING="gzip")
    assert len(response.content) < ApiGzipMiddleware.MIN_BYTES
    assert not response.has_header("Content-Encoding")
    assert response.json()["username"]


def test_answers_to_writes_and_pages_outside_the_api_are_never_compressed(api_as, client, monkeypatch):
    # A write may answer with a secret (a new token) next to what the caller sent; an HTML page holds a CSRF token.
    monkeypatch.setattr(ApiGzipMiddleware, "MIN_BYTES", 10)
    written = api_as("databases:read").post("/api/v1/auth/me/", {"x": 1}, format="json", HTTP_ACCEPT_ENCODING="gzip")
    assert written.status_code == 405
    assert not written.has_header("Content-Encoding")
    assert written.json()["error"] == "method_not_allowed"
    page = client.get("/admin/login/", HTTP_ACCEPT_ENCODING="gzip")
    assert page.status_code == 200
    assert not page.has_header("Content-Encoding")
    assert b"csrfmiddlewaretoken" in page.content
