"""Fixtures of the login and token tests: a real OpenID Connect provider (oidc-provider, Keycloak's layout)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from infra_site import roles
from tests.oidc_provider.launcher import (
    APP_CLIENT_ID,
    APP_CLIENT_SECRET,
    REALM,
    OidcProvider,
    app_client,
    running_provider,
    service_account,
)

# Redirect URIs must match exactly, and `localhost` is not `127.0.0.1`: the live server uses the address.
os.environ.setdefault("DJANGO_LIVE_TEST_SERVER_ADDRESS", "127.0.0.1")

ALICE = ("alice", "alice-password-1")
SHORT_TOKEN_SECONDS = 2


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    """The provider process for the session, with the app's client, service accounts and a user."""
    clients = [
        app_client(),
        service_account("infra-ci", client_roles=[roles.MIGRATIONS_EXECUTE]),
        service_account("infra-reader", client_roles=[roles.MIGRATIONS_READ]),
        service_account("infra-short", client_roles=[roles.MIGRATIONS_READ], ttl=SHORT_TOKEN_SECONDS),
        service_account("other-app", client_roles=[roles.MIGRATIONS_READ], audience="other-api"),
    ]
    users = [{"username": ALICE[0], "password": ALICE[1], "email": "alice@example.com"}]
    with running_provider(clients, users) as provider:
        yield provider


@pytest.fixture
def oidc(oidc_provider: OidcProvider, settings) -> OidcProvider:
    """Point the app at the provider's realm for one test (Keycloak login and bearer tokens on)."""
    settings.KEYCLOAK_URL = oidc_provider.url
    settings.KEYCLOAK_ADMIN_REALM = REALM
    settings.KEYCLOAK_CLIENT_ID = APP_CLIENT_ID
    settings.KEYCLOAK_CLIENT_SECRET = APP_CLIENT_SECRET
    return oidc_provider


@pytest.fixture
def live_oidc(oidc: OidcProvider, live_server) -> OidcProvider:
    """The provider with the live server's callback and post-logout URIs registered for the app's client."""
    oidc.put_client(
        app_client(f"{live_server.url}/oidc/callback/", post_logout_redirect_uris=(f"{live_server.url}/admin/login/",))
    )
    return oidc
