"""DRF authentication: Keycloak bearer tokens (validated locally against the realm's cached keys, and at the
provider's introspection endpoint when ``OIDC_INTROSPECTION_CACHE_SECONDS`` is set), and HTTP Basic with local
accounts under the failed-login lockout."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, BasicAuthentication, get_authorization_header
from rest_framework.request import Request

from infra_site import roles
from infra_site.auth import basic_cache, introspection, provider, services, tokens
from infra_site.client_address import client_address


class KeycloakBearerAuthentication(BaseAuthentication):
    """``Authorization: Bearer <access token>``: identity and roles come from the token itself."""

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, dict[str, Any]] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: expected 'Bearer <token>'.")
        if not provider.oidc_configured():
            raise exceptions.AuthenticationFailed("Bearer tokens are not accepted: OpenID Connect is not configured.")
        token = parts[1].decode("latin-1")
        try:
            claims = tokens.validate_access_token(token)
        except tokens.InvalidToken as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        if introspection.introspection_enabled() and not introspection.token_active(token, claims=claims):
            raise exceptions.AuthenticationFailed("The token is no longer active at the identity provider (revoked).")
        user = services.oidc_user_sync(issuer=provider.issuer(), claims=claims, granted=tokens.granted_roles(claims))
        if not user.is_active:
            raise exceptions.AuthenticationFailed("This user is deactivated.")
        return user, claims

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class LockoutBasicAuthentication(BasicAuthentication):
    """HTTP Basic with local accounts, watched by the failed-login lockout (django-axes).

    ``authenticate()`` gets Django's request, not DRF's: axes records a failure with the request's form data,
    and DRF's ``request.POST`` would run the API's parsers, so a malformed JSON body could stop the record
    after the password was checked (an unlimited guessing oracle). A POSTed form is parsed before the password
    is checked, for the same reason: one Django cannot read is refused (400) with no password tried. On a
    lockout, ``axes.middleware.AxesMiddleware`` answers 429 (``infra_site.auth.lockout.lockout_response``).

    Credentials verified from the same address less than ``BASIC_AUTH_CACHE_SECONDS`` ago are let in without
    any of it (``infra_site.auth.basic_cache``).
    """

    def authenticate_credentials(self, userid: str, password: str, request: Request | None = None):
        assert request is not None  # BasicAuthentication.authenticate() always passes it
        http_request = request._request
        http_request.POST  # noqa: B018 (parsing is the point)
        address = client_address(http_request)
        remembered = basic_cache.get(address, userid, password)
        if remembered is not None:
            return remembered, None
        # The stubs say DRF's Request; DRF only hands it on to django.contrib.auth.authenticate(), which takes this.
        user, auth = super().authenticate_credentials(userid, password, http_request)  # type: ignore[arg-type]
        basic_cache.put(address, userid, password, user, roles.user_roles(user))
        return user, auth
