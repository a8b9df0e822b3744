"""Token introspection (RFC 7662): whether the provider still holds a bearer token active.

Local validation (signature, issuer, expiry) cannot see a token revoked at the provider: it works until it
expires. With ``OIDC_INTROSPECTION_CACHE_SECONDS`` set, each token is also checked at the provider's
introspection endpoint, as this app's confidential client; the answer is kept in the shared cache for that many
seconds (never past the token's expiry), so a revoked token stops working within that time.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache

from infra_site.auth import provider

CACHE_PREFIX = "oidc-introspection:"


def introspection_enabled() -> bool:
    """Tell whether bearer tokens are checked at the provider (``OIDC_INTROSPECTION_CACHE_SECONDS`` is set)."""
    return settings.OIDC_INTROSPECTION_CACHE_SECONDS is not None


def token_active(token: str, *, claims: dict[str, Any]) -> bool:
    """Tell whether the provider holds ``token`` (already validated locally, with ``claims``) active; raise
    ``ProviderUnavailable`` (503) when it cannot tell: a token that cannot be checked is not accepted."""
    seconds = settings.OIDC_INTROSPECTION_CACHE_SECONDS or 0
    key = CACHE_PREFIX + hashlib.sha256(token.encode()).hexdigest()
    if seconds:
        cached = cache.get(key)
        if cached is not None:
            return bool(cached)
    url = settings.OIDC_INTROSPECTION_ENDPOINT or provider.endpoints().introspection_endpoint
    if not url:
        raise provider.ProviderUnavailable(
            "The identity provider announces no introspection endpoint: set OIDC_INTROSPECTION_ENDPOINT."
        )
    try:
        response = requests.post(
            url,
            data={"token": token, "token_type_hint": "access_token"},
            auth=(settings.KEYCLOAK_CLIENT_ID, settings.KEYCLOAK_CLIENT_SECRET),
            timeout=settings.OIDC_TIMEOUT,
        )
        response.raise_for_status()
        active = response.json().get("active") is True
    except (requests.RequestException, ValueError, AttributeError) as exc:
        raise provider.ProviderUnavailable(
            "The identity provider's introspection endpoint could not be read.", details={"cause": type(exc).__name__}
        ) from exc
    if seconds:
        remaining = int(claims.get("exp", 0) - time.time())
        cache.set(key, active, timeout=max(1, min(seconds, remaining)))
    return active
