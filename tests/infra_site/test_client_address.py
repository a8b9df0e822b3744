"""One client address for rate limits and login lockouts: X-Forwarded-For counts only behind trusted proxies."""

from __future__ import annotations

import base64

import pytest
from axes.models import AccessAttempt
from django.test import RequestFactory
from rest_framework.test import APIClient

from infra_site.client_address import client_address


def request_from(peer: str, forwarded: str | None = None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=peer, **headers)


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, None, "10.0.0.1"),
        (0, "203.0.113.5", "10.0.0.1"),
        (1, None, "10.0.0.1"),
        (1, "203.0.113.5", "203.0.113.5"),
        # Left of what the proxy appended stands whatever the client sent.
        (1, "198.51.100.1, 203.0.113.5", "203.0.113.5"),
        (2, "198.51.100.1, 203.0.113.5, 10.0.0.2", "203.0.113.5"),
        # Fewer entries than proxies, or no address where the proxies' entry should be: the peer.
        (2, "203.0.113.5", "10.0.0.1"),
        (1, "not-an-address", "10.0.0.1"),
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_address_trusts_x_forwarded_for_only_behind_the_configured_proxies(
    settings, proxies, forwarded, expected
):
    settings.TRUSTED_PROXY_COUNT = proxies
    assert client_address(request_from("10.0.0.1", forwarded)) == expected


def failed_basic_login(forwarded: str) -> None:
    credentials = base64.b64encode(b"nobody:guess").decode()
    APIClient().get(
        "/api/v1/auth/me/",
        HTTP_AUTHORIZATION=f"Basic {credentials}",
        REMOTE_ADDR="10.0.0.1",
        HTTP_X_FORWARDED_FOR=forwarded,
    )


@pytest.mark.django_db
def test_the_login_lockout_counts_by_the_same_client_address(settings):
    failed_basic_login("203.0.113.5")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.0.0.1"}
    settings.TRUSTED_PROXY_COUNT = 1
    failed_basic_login("198.51.100.1, 203.0.113.5")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.0.0.1", "203.0.113.5"}
