"""The OpenID Connect provider (a Keycloak realm): whether it is configured, its issuer and its endpoints."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import requests
from django.conf import settings
from rest_framework import status

from infra_site.errors import ApplicationError


class ProviderUnavailable(ApplicationError):
    """The identity provider could not be reached or answered nonsense."""

    code = "identity_provider_unavailable"
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


@dataclass(frozen=True)
class Endpoints:
    """The endpoints of the realm, as its discovery document lists them."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    introspection_endpoint: str


_discovered: dict[str, Endpoints] = {}
_lock = threading.Lock()


def oidc_configured() -> bool:
    """Tell whether Keycloak login is configured (URL, client id and client secret all set)."""
    return bool(settings.KEYCLOAK_URL and settings.KEYCLOAK_CLIENT_ID and settings.KEYCLOAK_CLIENT_SECRET)


def issuer() -> str:
    """Return the issuer of the configured realm: ``KEYCLOAK_URL/realms/<realm>``."""
    return f"{settings.KEYCLOAK_URL.rstrip('/')}/realms/{settings.KEYCLOAK_ADMIN_REALM}"


def endpoints() -> Endpoints:
    """Return the realm's endpoints, reading its discovery document once per issuer."""
    expected = issuer()
    found = _discovered.get(expected)
    if found is None:
        with _lock:
            found = _discovered.get(expected) or endpoints_discover(issuer=expected)
            _discovered[expected] = found
    return found


def endpoints_discover(*, issuer: str) -> Endpoints:
    """Read the realm's discovery document now (no cache) and return its endpoints; raise ``ProviderUnavailable``
    when it cannot be read, lacks an endpoint or announces another issuer than ``issuer``."""
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(
            "The identity provider's discovery document could not be read.", details={"url": url, "cause": str(exc)}
        ) from exc
    if document.get("issuer") != issuer:
        raise ProviderUnavailable(
            "The identity provider announces another issuer than KEYCLOAK_URL and KEYCLOAK_ADMIN_REALM give.",
            details={"expected": issuer, "announced": document.get("issuer")},
        )
    try:
        return Endpoints(
            issuer=issuer,
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            userinfo_endpoint=document.get("userinfo_endpoint", ""),
            jwks_uri=document["jwks_uri"],
            end_session_endpoint=document.get("end_session_endpoint", ""),
            introspection_endpoint=document.get("introspection_endpoint", ""),
        )
    except KeyError as exc:
        raise ProviderUnavailable(
            f"The identity provider's discovery document lacks {exc.args[0]}.", details={"url": url}
        ) from exc
