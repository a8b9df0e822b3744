"""The admin login page (Keycloak button, local form where allowed), the start of a Keycloak login, logout, me."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import extend_schema
from mozilla_django_oidc.views import OIDCAuthenticationRequestView
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from infra_site import roles
from infra_site.auth import provider
from infra_site.auth.authentication import KeycloakBearerAuthentication, LockoutBasicAuthentication
from infra_site.models import OidcIdentity

AUTHENTICATION_NAMES: dict[type[object], str] = {
    KeycloakBearerAuthentication: "bearer",
    SessionAuthentication: "session",
    LockoutBasicAuthentication: "basic",
}


@sensitive_post_parameters("password")
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin login page, offering "Log in with Keycloak" and the password form where each is enabled."""
    context = {
        "oidc_enabled": provider.oidc_configured(),
        "local_login_enabled": settings.LOCAL_LOGIN_ENABLED,
        "oidc_error": "oidc_error" in request.GET,
    }
    return admin.site.login(request, extra_context=context)


class KeycloakLoginView(OIDCAuthenticationRequestView):
    """Redirect to the realm's authorization endpoint (PKCE, state and nonce kept in the session)."""

    def __init__(self, **kwargs: Any) -> None:
        # The base class reads the endpoint at construction; it is resolved per request in get() instead.
        super(OIDCAuthenticationRequestView, self).__init__(**kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not provider.oidc_configured():
            raise Http404("Keycloak login is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider.endpoints().authorization_endpoint
        except provider.ProviderUnavailable as exc:
            messages.error(request, f"Keycloak cannot be reached right now: {exc.message}")
            return HttpResponseRedirect(resolve_url("admin:login"))
        self.OIDC_RP_CLIENT_ID = settings.KEYCLOAK_CLIENT_ID
        return super().get(request)


def provider_logout_url(request: HttpRequest) -> str:
    """Return where logout goes: the realm's end-session endpoint (RP-initiated logout) or the login page."""
    local = resolve_url(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not id_token or not provider.oidc_configured():
        return local
    try:
        end_session = provider.endpoints().end_session_endpoint
    except provider.ProviderUnavailable:
        return local
    if not end_session:
        return local
    query = urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": request.build_absolute_uri(local)})
    return f"{end_session}?{query}"


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.CharField()
    is_superuser = serializers.BooleanField()
    roles = serializers.ListField(
        child=serializers.ChoiceField(choices=roles.ALL_ROLES), help_text="Held directly or through the hierarchy."
    )
    authentication = serializers.ChoiceField(choices=[*AUTHENTICATION_NAMES.values(), "other"])
    subject = serializers.CharField(allow_null=True, help_text="The Keycloak subject; null for a local account.")


class MeView(APIView):
    """Who the caller is: username, the roles held (directly and through the hierarchy) and how they signed in."""

    @extend_schema(responses={200: MeSerializer})
    def get(self, request: Request) -> Response:
        user = request.user
        assert user.is_authenticated  # the default permission, IsAuthenticated, lets only a signed-in user in
        identity = OidcIdentity.objects.filter(user=user).first()
        return Response(
            MeSerializer(
                {
                    "username": user.get_username(),
                    "email": user.email,
                    "is_superuser": user.is_superuser,
                    "roles": sorted(roles.user_roles(user)),
                    "authentication": AUTHENTICATION_NAMES.get(type(request.successful_authenticator), "other"),
                    "subject": identity.subject if identity else None,
                }
            ).data
        )
