"""The failed-login lockout (django-axes): which logins it watches, and what a locked-out client is answered."""

from __future__ import annotations

from typing import Any

from axes.helpers import get_client_username
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import status

from infra_site.errors import ApplicationError


class LoginLockedOut(ApplicationError):
    code = "login_locked_out"
    status_code = status.HTTP_429_TOO_MANY_REQUESTS


def is_not_password_login(request: HttpRequest, credentials: dict[str, Any] | None) -> bool:
    """Return True for a login without a password (Keycloak's callback): axes neither counts nor refuses it."""
    return (credentials or {}).get("password") is None


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """Answer a login refused for a lockout: the API's JSON error on /api/, else the admin's lockout page (429)."""
    username = get_client_username(request, credentials) or ""
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    if request.path_info.startswith("/api/"):
        error = LoginLockedOut(
            f"Too many failed logins for {username!r} from this address: "
            f"try again after {minutes} minutes with no other attempt.",
            details={"retry_after_seconds": minutes * 60, "failure_limit": settings.LOGIN_FAILURE_LIMIT},
        )
        response = JsonResponse(error.as_dict(), status=error.status_code)
        response["Retry-After"] = str(minutes * 60)
        return response
    context = {
        **admin.site.each_context(request),
        "title": "Too many failed logins",
        "username": username,
        "minutes": minutes,
    }
    return render(request, "infra_site/lockout.html", context, status=status.HTTP_429_TOO_MANY_REQUESTS)
