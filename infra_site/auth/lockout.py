"""The failed-login lockout (django-axes): which logins it watches, how it counts, and what a locked-out client
is answered.

Two limits, both checked before any password is hashed:

- a username from one client address: ``LOGIN_FAILURE_LIMIT`` failures lock that pair (django-axes, rows in the
  control database), so the same user still logs in from elsewhere;
- a client address, whatever usernames it tries: ``LOGIN_ADDRESS_FAILURE_LIMIT`` failures, or
  ``LOGIN_FAILURE_LIMIT`` with usernames no account has, within ``LOGIN_LOCKOUT_MINUTES`` lock the address
  until that window ends (counters in the shared cache).

Usernames that no account has are recorded under one name, ``UNKNOWN_USERNAME``, so a stream of invented names
adds no row per name. They lock the whole address at the limit a username has: were only that one name locked,
a name still answered 401 after it would be told to be an account's. Attempts refused by a lockout are not
recorded and do not prolong it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from rest_framework import status

from infra_site.errors import ApplicationError

# Not a valid username (spaces, parentheses): never an account's.
UNKNOWN_USERNAME = "(unknown user)"
# Set on a request refused for its address: its AddressLockout.
ADDRESS_LOCKOUT_ATTRIBUTE = "login_address_retry_after"


class LoginLockedOut(ApplicationError):
    code = "login_locked_out"
    status_code = status.HTTP_429_TOO_MANY_REQUESTS


def is_not_password_login(request: HttpRequest, credentials: dict[str, Any] | None) -> bool:
    """Return True for a login without a password (Keycloak's callback): axes neither counts nor refuses it."""
    return (credentials or {}).get("password") is None


def lockout_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """The username axes records and counts: the one tried when an account has it, else ``UNKNOWN_USERNAME``."""
    username = (credentials or {}).get("username")
    if username is None:
        return None
    users = get_user_model()._default_manager
    return username if users.filter(**{get_user_model().USERNAME_FIELD: username}).exists() else UNKNOWN_USERNAME


@dataclass(frozen=True)
class AddressLockout:
    """An address refused: the seconds until it may try again, and the limit it reached."""

    retry_after: int
    failure_limit: int


def _address_key(address: str) -> str:
    return f"login-failures:{address}"


def address_lockout(address: str | None) -> AddressLockout | None:
    """The lockout of ``address`` (see the module's docstring), or None when it may try a password now."""
    if not address:
        return None
    state = cache.get(_address_key(address))
    if not state:
        return None
    failures, unknown, window_end = state
    remaining = window_end - time.time()
    if remaining <= 0:
        return None
    if failures >= settings.LOGIN_ADDRESS_FAILURE_LIMIT:
        return AddressLockout(math.ceil(remaining), settings.LOGIN_ADDRESS_FAILURE_LIMIT)
    if unknown >= settings.LOGIN_FAILURE_LIMIT:
        return AddressLockout(math.ceil(remaining), settings.LOGIN_FAILURE_LIMIT)
    return None


def address_failure_record(address: str | None, *, unknown_username: bool) -> None:
    """Count a failed password login of ``address`` in its window (the first failure opens one)."""
    if not address:
        return
    now = time.time()
    state = cache.get(_address_key(address))
    if not state or state[2] <= now:
        state = (0, 0, now + settings.LOGIN_LOCKOUT_MINUTES * 60)
    failures, unknown, window_end = state
    cache.set(
        _address_key(address),
        (failures + 1, unknown + int(unknown_username), window_end),
        timeout=math.ceil(window_end - now),
    )


class LockoutHandler(AxesDatabaseHandler):
    """axes' database handler, with the limit per client address checked first, in the shared cache."""

    def is_allowed(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> bool:
        if self.is_whitelisted(request, credentials):
            return True
        lockout = address_lockout(request.axes_ip_address)  # type: ignore[attr-defined]
        if lockout:
            setattr(request, ADDRESS_LOCKOUT_ATTRIBUTE, lockout)
            return False
        return super().is_allowed(request, credentials)

    def user_login_failed(self, sender, credentials: dict, request: HttpRequest | None = None, **kwargs) -> None:
        # A refusal for a lockout (axes_locked_out already set) was no password check: not counted.
        if request is not None and not request.axes_locked_out and not self.is_whitelisted(request, credentials):  # type: ignore[attr-defined]
            address_failure_record(
                request.axes_ip_address,  # type: ignore[attr-defined]
                unknown_username=lockout_username(request, credentials) == UNKNOWN_USERNAME,
            )
        super().user_login_failed(sender, credentials, request, **kwargs)


def _pair_lockout_remaining(request: HttpRequest, credentials: dict[str, Any] | None) -> int:
    """Seconds until the locked-out username may try again from this address (its last counted failure ends it)."""
    last = AccessAttempt.objects.filter(
        username=get_client_username(request, credentials),
        ip_address=getattr(request, "axes_ip_address", None),
    ).aggregate(last=Max("attempt_time"))["last"]
    cool_off = settings.LOGIN_LOCKOUT_MINUTES * 60
    if last is None:
        return cool_off
    return max(1, math.ceil((last - timezone.now()).total_seconds() + cool_off))


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict[str, Any] | None
) -> HttpResponse:
    """Answer a login refused for a lockout: the API's JSON error on /api/, else the admin's lockout page (429)."""
    username = (credentials or {}).get("username") or ""
    address = getattr(request, ADDRESS_LOCKOUT_ATTRIBUTE, None)
    if address:
        retry_after = address.retry_after
        message = "Too many failed logins from this address"
        details = {"retry_after_seconds": retry_after, "failure_limit": address.failure_limit}
    else:
        retry_after = _pair_lockout_remaining(request, credentials)
        message = f"Too many failed logins for {username!r} from this address"
        details = {"retry_after_seconds": retry_after, "failure_limit": settings.LOGIN_FAILURE_LIMIT}
    if request.path_info.startswith("/api/"):
        error = LoginLockedOut(f"{message}: try again in {retry_after} seconds.", details=details)
        response = JsonResponse(error.as_dict(), status=error.status_code)
        response["Retry-After"] = str(retry_after)
        return response
    context = {
        **admin.site.each_context(request),
        "title": "Too many failed logins",
        "username": "" if address else username,
        "minutes": math.ceil(retry_after / 60),
    }
    return render(request, "infra_site/lockout.html", context, status=status.HTTP_429_TOO_MANY_REQUESTS)
