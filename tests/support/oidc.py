"""What several login and token tests do: sign in through "Log in with Keycloak" like a browser, on a live server;
call the API with a bearer token, and check how a refused token is answered."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urljoin

import pytest
import requests
from rest_framework.test import APIClient

from tests.oidc_provider.launcher import submit_login_form

MIGRATIONS = "/api/v1/migrations/"

# The live server runs in a thread; its tests commit, and the role groups are restored after each.
live = pytest.mark.django_db(transaction=True)


def keycloak_login(base_url: str, username: str, password: str) -> tuple[requests.Session, requests.Response]:
    """Click "Log in with Keycloak" on the admin login page and sign in at the provider, as a browser would."""
    browser = requests.Session()
    login_page = browser.get(f"{base_url}/admin/login/?next=/admin/", timeout=10)
    link = re.search(r'id="keycloak-login-link"[^>]*href="([^"]+)"', login_page.text)
    assert link, login_page.text
    provider_page = browser.get(urljoin(login_page.url, unescape(link.group(1))), timeout=10)
    callback = submit_login_form(browser, provider_page, username, password, stop_at=f"{base_url}/oidc/callback/")
    landed = browser.get(urljoin(callback.url, callback.headers["location"]), timeout=10)
    return browser, landed


def bearer(token: str) -> APIClient:
    """An API client that sends ``token`` as its bearer token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def assert_refused(response, fragment: str) -> None:
    """Assert that ``response`` refuses the token (401, a Bearer challenge), its message naming ``fragment``."""
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["error"] == "authentication_failed"
    assert fragment in body["message"]
    assert set(body) == {"error", "message", "details"}
    assert response["WWW-Authenticate"].startswith("Bearer")
