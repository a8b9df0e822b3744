"""The address of the client of a request: the one address that rate limits and login lockouts count by."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest
from rest_framework.request import Request


def client_address(request: HttpRequest | Request) -> str:
    """Return the client's IP address: the peer's, or behind ``TRUSTED_PROXY_COUNT`` proxies the address the
    farthest of them saw, read from the right of ``X-Forwarded-For``.

    Each proxy appends the address of its own peer to the header, so only the last ``TRUSTED_PROXY_COUNT``
    entries were written by the proxies; whatever stands left of them the client chose. A header that is
    missing or names no IP address there leaves the peer's address.
    """
    peer = request.META.get("REMOTE_ADDR", "")
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return peer
    forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    if len(forwarded) < proxies:
        return peer
    candidate = forwarded[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer
