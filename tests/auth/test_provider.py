"""Finding the realm's endpoints from KEYCLOAK_URL and the realm through its discovery document."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from infra_site.auth import provider
from tests.oidc_provider.launcher import OidcProvider


@pytest.mark.django_db
def test_endpoints_come_from_the_realms_discovery_document_in_keycloaks_layout(oidc: OidcProvider):
    found = provider.endpoints()
    assert found.issuer == f"{oidc.url}/realms/infra"
    for name, value in [
        ("auth", found.authorization_endpoint),
        ("token", found.token_endpoint),
        ("userinfo", found.userinfo_endpoint),
        ("certs", found.jwks_uri),
        ("logout", found.end_session_endpoint),
    ]:
        assert value == oidc.endpoint(name)


@pytest.mark.django_db
def test_a_provider_that_cannot_be_reached_gives_503_not_500(settings, closed_port):
    settings.KEYCLOAK_URL = f"http://127.0.0.1:{closed_port}"
    settings.KEYCLOAK_CLIENT_ID = "infra-app"
    settings.KEYCLOAK_CLIENT_SECRET = "secret"
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln")
    response = api.get("/api/v1/migrations/")
    assert response.status_code == 503
    assert response.json()["error"] == "identity_provider_unavailable"


@pytest.mark.django_db
def test_a_realm_announcing_another_issuer_is_refused(oidc: OidcProvider, settings):
    settings.KEYCLOAK_URL = oidc.url.replace("127.0.0.1", "localhost")
    with pytest.raises(provider.ProviderUnavailable, match="another issuer"):
        provider.endpoints()
