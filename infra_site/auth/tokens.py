"""Validation of the provider's tokens (RS256 against the cached JWKS) and the roles they grant.

Audience rule for access tokens: accepted when ``aud`` contains ``KEYCLOAK_CLIENT_ID`` or the authorized
party ``azp`` is that client. Keycloak puts its ``account`` client in ``aud`` by default, so tokens issued to
this app carry it in ``azp``; tokens of other clients (CI service accounts) need an audience mapper that adds
this app's client id to ``aud``.
"""

from __future__ import annotations

from typing import Any

import jwt
from django.conf import settings

from infra_site import roles
from infra_site.auth.jwks import UnknownSigningKey, jwks_cache
from infra_site.auth.provider import issuer

ALGORITHM = "RS256"
# Keycloak marks its tokens with a `typ` claim; only access tokens may be used as bearer tokens.
BEARER_TYPES = (None, "Bearer")


class InvalidToken(Exception):
    """The token is not one this service accepts; the message says why."""


def _verify(token: str, *, audience: str | None) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("The token is not a well-formed JWT.") from exc
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(f"The token must be signed with {ALGORITHM}, not {header.get('alg')!r}.")
    try:
        key = jwks_cache().signing_key(str(header.get("kid", "")))
    except UnknownSigningKey as exc:
        raise InvalidToken("The token is signed with a key the identity provider does not publish.") from exc
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer(),
            audience=audience,
            leeway=settings.OIDC_CLOCK_LEEWAY,
            options={"require": ["exp", "iat", "iss", "sub"], "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("The token has expired.") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidToken(f"The token was not issued by {issuer()}.") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidToken(f"The token is not meant for the client {settings.KEYCLOAK_CLIENT_ID}.") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("The token's signature is invalid.") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"The token is invalid: {exc}.") from exc


def validate_access_token(token: str) -> dict[str, Any]:
    """Return the claims of a valid access token for this service; raise ``InvalidToken`` otherwise."""
    claims = _verify(token, audience=None)
    client_id = settings.KEYCLOAK_CLIENT_ID
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else list(audience or [])
    if client_id not in audiences and claims.get("azp") != client_id:
        raise InvalidToken(f"The token is not meant for the client {client_id} (neither its aud nor its azp).")
    if claims.get("typ") not in BEARER_TYPES:
        raise InvalidToken(f"A {claims['typ']} token cannot be used as a bearer token.")
    return claims


def validate_id_token(token: str, *, nonce: str | None) -> dict[str, Any]:
    """Return the claims of a valid ID token issued to this service for ``nonce``; raise ``InvalidToken``."""
    claims = _verify(token, audience=settings.KEYCLOAK_CLIENT_ID)
    if claims.get("nonce") != nonce:
        raise InvalidToken("The ID token does not answer this login request (nonce mismatch).")
    return claims


def granted_roles(claims: dict[str, Any]) -> frozenset[str]:
    """Return the control-plane roles a token grants directly: realm roles and this client's roles."""
    realm = (claims.get("realm_access") or {}).get("roles") or []
    client = ((claims.get("resource_access") or {}).get(settings.KEYCLOAK_CLIENT_ID) or {}).get("roles") or []
    return frozenset(role for role in [*realm, *client] if role in roles.ALL_ROLES)
