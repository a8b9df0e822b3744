"""Oversized and pathological API request bodies get a 4xx with the error shape, never a 500."""

import base64
import json
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt
from rest_framework.test import APIClient

from infra_site import roles

pytestmark = pytest.mark.django_db

DATABASES = "/api/v1/databases/"
EXECUTE = "/api/v1/migrations/execute/"
ENDPOINTS = [(DATABASES, roles.DATABASES_MANAGE), (EXECUTE, roles.MIGRATIONS_EXECUTE)]


def assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == code
    return body


@pytest.mark.parametrize(("url", "role"), ENDPOINTS)
def test_a_10_mb_json_body_is_refused_with_413(api_as, url, role):
    body = json.dumps({"name": "x" * (10 * 1024 * 1024)})
    response = api_as(role).post(url, body, content_type="application/json")
    body = assert_error_shape(response, 413, "request_too_large")
    assert body["details"]["max_bytes"] == 2621440


def test_an_oversized_body_is_refused_before_anything_reads_it():
    # Before authentication too: nothing parses (or buffers) 10 MB for an anonymous client.
    body = json.dumps({"name": "x" * (10 * 1024 * 1024)})
    response = APIClient().post(DATABASES, body, content_type="application/json")
    assert_error_shape(response, 413, "request_too_large")


@pytest.mark.parametrize(("url", "role"), ENDPOINTS)
def test_json_nested_100000_deep_is_refused_with_400(api_as, url, role):
    response = api_as(role).post(url, "[" * 100_000 + "]" * 100_000, content_type="application/json")
    body = assert_error_shape(response, 400, "parse_error")
    assert "nested too deeply" in body["message"]


@pytest.mark.parametrize(("url", "role"), ENDPOINTS)
def test_2000_form_fields_are_refused_with_400(api_as, url, role):
    form = urlencode([(f"field{n}", "x") for n in range(2000)])
    response = api_as(role).post(url, form, content_type="application/x-www-form-urlencoded")
    body = assert_error_shape(response, 400, "too_many_fields")
    assert body["details"]["max_fields"] == 1000


@pytest.mark.parametrize("password", ["basic-pw", "wrong-pw"])
def test_an_unreadable_form_is_refused_before_the_basic_password_is_checked(make_user, password):
    # Else the answer would tell a right password (405: this view never reads the body) from a wrong one.
    make_user(roles.MIGRATIONS_READ, username="basic-op", password="basic-pw")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"basic-op:{password}".encode()).decode())
    form = urlencode([(f"field{n}", "x") for n in range(2000)])
    response = api.post("/api/v1/auth/me/", form, content_type="application/x-www-form-urlencoded")
    assert_error_shape(response, 400, "too_many_fields")
    assert not AccessAttempt.objects.exists()


def test_a_json_body_within_the_limits_still_reaches_the_view(api_as):
    response = api_as(roles.DATABASES_MANAGE).post(DATABASES, {"name": "Not A Slug"}, format="json")
    assert_error_shape(response, 400, "validation_error")
