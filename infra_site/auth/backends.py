"""Authentication backends: Keycloak login (authorization code flow) and local passwords (break-glass)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from infra_site.auth import provider, services, tokens

# Identity claims taken from the ID token, or from the access token where the ID token lacks them.
IDENTITY_CLAIMS = ("sub", "preferred_username", "email", "given_name", "family_name")


class KeycloakBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's login, with identity and roles from the verified tokens instead of userinfo.

    Keycloak's default mappers put roles in the access token only, and audience-bound access tokens are
    refused at userinfo by some providers; both tokens are verified with the JWKS code of the bearer path.
    """

    def __init__(self) -> None:
        # The base class resolves every endpoint here, and Django builds a backend per request of a signed-in
        # user; endpoints are resolved lazily (the properties below) so those requests never touch the network.
        self.UserModel = get_user_model()

    # The base class's attribute names, read at use time so settings overridden later (tests) take effect.
    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:
        return provider.endpoints().token_endpoint

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:
        return settings.KEYCLOAK_CLIENT_ID

    @property
    def OIDC_RP_CLIENT_SECRET(self) -> str:
        return settings.KEYCLOAK_CLIENT_SECRET

    def authenticate(self, request: HttpRequest | None, **kwargs: Any):
        """Log in from the provider's callback (code and state in the query); ``None`` for any other call."""
        if not provider.oidc_configured():
            return None
        return super().authenticate(request, **kwargs)

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """Return the claims of the ID token of this login, verified against the realm's keys."""
        try:
            return tokens.validate_id_token(token, nonce=kwargs.get("nonce"))
        except tokens.InvalidToken as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from exc

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]):
        """Return the user of the ID token's subject, with the roles of the access token."""
        try:
            access = tokens.validate_access_token(access_token)
        except tokens.InvalidToken as exc:
            raise SuspiciousOperation(f"Access token refused: {exc}") from exc
        if access["sub"] != payload["sub"]:
            raise SuspiciousOperation("The access token and the ID token name different subjects.")
        claims = {name: payload.get(name, access.get(name)) for name in IDENTITY_CLAIMS}
        return services.oidc_user_sync(issuer=provider.issuer(), claims=claims, granted=tokens.granted_roles(access))


class LocalPasswordBackend(ModelBackend):
    """Django's username and password login, only while ``LOCAL_LOGIN_ENABLED`` is on.

    Turning the setting off also ends the sessions that were opened with a local password.
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kw):
        if not settings.LOCAL_LOGIN_ENABLED:
            return None
        return super().authenticate(request, username=username, password=password, **kw)

    def get_user(self, user_id: int):
        if not settings.LOCAL_LOGIN_ENABLED:
            return None
        return super().get_user(user_id)
