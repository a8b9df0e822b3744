"""The API's exception handler: every error, whatever raised it, answers ``{"error", "message", "details"}``; error
reports never show a password."""

from __future__ import annotations

import secrets

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import Http404
from django.http.multipartparser import MultiPartParserError
from django.urls import reverse
from rest_framework import exceptions

from infra_site.errors import api_exception_handler
from tests.support.debug import debug_page


def handle(exc: Exception):
    response = api_exception_handler(exc, {})
    assert response is not None
    assert set(response.data) == {"error", "message", "details"}
    return response


def test_a_body_above_the_upload_limit_is_a_413_naming_the_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = handle(RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE."))
    assert response.status_code == 413
    assert response.data == {
        "error": "request_too_large",
        "message": "The request body is larger than 2048 bytes.",
        "details": {"max_bytes": 2048},
    }


def test_a_body_with_too_many_fields_is_a_400_naming_the_limit(settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 50
    response = handle(TooManyFieldsSent("too many"))
    assert response.status_code == 400
    assert response.data == {
        "error": "too_many_fields",
        "message": "The request has more than 50 form fields.",
        "details": {"max_fields": 50},
    }


def test_a_malformed_multipart_body_is_a_parse_error():
    response = handle(MultiPartParserError("Invalid boundary in multipart: None"))
    assert response.status_code == 400
    assert response.data["error"] == "parse_error"
    assert response.data["message"] == "Malformed request body: Invalid boundary in multipart: None"


def test_a_suspicious_request_is_a_bad_request_with_its_reason():
    response = handle(SuspiciousOperation("The number of files exceeded settings.DATA_UPLOAD_MAX_NUMBER_FILES."))
    assert response.status_code == 400
    assert response.data["error"] == "bad_request"
    assert "DATA_UPLOAD_MAX_NUMBER_FILES" in response.data["message"]


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [(Http404("nothing here"), 404, "not_found"), (PermissionDenied(), 403, "permission_denied")],
    ids=["http404", "permission-denied"],
)
def test_django_errors_become_their_api_counterparts(exc, status, code):
    response = handle(exc)
    assert response.status_code == status
    assert response.data["error"] == code


def test_a_dict_detail_gives_the_message_and_the_rest_as_details():
    response = handle(exceptions.PermissionDenied({"message": "Needs migrations:execute.", "role": "execute"}))
    assert response.status_code == 403
    assert response.data == {
        "error": "permission_denied",
        "message": "Needs migrations:execute.",
        "details": {"role": "execute"},
    }


def test_a_validation_error_names_the_first_nested_field_in_its_message():
    detail = {"targets": [{}, {"schema": ["Not a valid identifier."]}], "name": ["Required."]}
    response = handle(exceptions.ValidationError(detail))
    assert response.status_code == 400
    assert response.data["error"] == "validation_error"
    assert response.data["message"] == "Invalid input: targets.schema: Not a valid identifier."
    assert response.data["details"]["name"] == ["Required."]


def test_a_validation_error_without_fields_keeps_them_as_non_field_errors():
    response = handle(exceptions.ValidationError(["Give a scope or a list of targets."]))
    assert response.data["message"] == "Invalid input: Give a scope or a list of targets."
    assert response.data["details"] == {"non_field_errors": ["Give a scope or a list of targets."]}


def test_throttling_says_when_to_come_back_in_the_body_and_the_header():
    response = handle(exceptions.Throttled(wait=12.7))
    assert response.status_code == 429
    assert response.data["error"] == "rate_limited"
    assert response.data["details"] == {"retry_after_seconds": 13}  # rounded up: never too early
    assert response["Retry-After"] == "13"


def test_an_unexpected_error_is_logged_and_answered_without_its_text(caplog):
    response = handle(RuntimeError("secret internals"))
    assert response.status_code == 500
    assert response.data["error"] == "internal_error"
    assert "secret internals" not in str(response.data)
    assert "unhandled error in API view" in caplog.text


TYPED = "Typed-" + secrets.token_hex(6)  # made here, so that no source line shown in a report holds it


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "form"),
    [
        (lambda user: reverse("infra-admin-login"), {"username": "someone", "password": TYPED}),
        (
            lambda user: reverse("admin:password_change"),
            {"old_password": TYPED, "new_password1": TYPED, "new_password2": TYPED},
        ),
        (
            lambda user: reverse("admin:auth_user_add"),
            {"username": "new-user", "password1": TYPED, "password2": TYPED, "usable_password": "true"},
        ),
        (
            lambda user: reverse("admin:auth_user_password_change", args=[user.pk]),
            {"password1": TYPED, "password2": TYPED, "usable_password": "true"},
        ),
    ],
    ids=["login", "own password", "user add", "user password"],
)
def test_the_debug_page_of_a_view_that_takes_a_password_does_not_show_it(client, settings, url, form):
    settings.DEBUG = True
    user = User.objects.create_superuser("root", password="pw-for-tests")
    if "login" not in url(user):
        client.force_login(user)
    response = client.post(url(user), form)
    assert response.status_code in (200, 302)
    page = debug_page(response.wsgi_request)
    assert "a failure while serving the request" in page
    assert TYPED not in page
