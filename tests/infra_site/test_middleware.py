"""The project's middleware: API paths served with or without their trailing slash, and the body limit."""

from __future__ import annotations

import pytest

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
