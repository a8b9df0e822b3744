"""Token introspection (RFC 7662) at the real test provider: a revoked token stops working, within the cache."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.oidc_provider.launcher import OidcProvider
from tests.support.oidc import MIGRATIONS, assert_refused, bearer

pytestmark = pytest.mark.django_db

INTROSPECT = "/token/introspect"


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()


def test_by_default_a_revoked_token_works_until_it_expires_and_nothing_is_introspected(oidc: OidcProvider):
    token = oidc.client_credentials("infra-reader")
    before = oidc.requests_to(INTROSPECT)
    assert bearer(token).get(MIGRATIONS).status_code == 200
    oidc.revoke(token, "infra-reader")
    assert bearer(token).get(MIGRATIONS).status_code == 200
    assert oidc.requests_to(INTROSPECT) == before


def test_without_a_cache_a_revoked_token_is_refused_at_the_next_request(oidc: OidcProvider, settings):
    settings.OIDC_INTROSPECTION_CACHE_SECONDS = 0
    token = oidc.client_credentials("infra-reader")
    before = oidc.requests_to(INTROSPECT)
    assert bearer(token).get(MIGRATIONS).status_code == 200
    assert bearer(token).get(MIGRATIONS).status_code == 200
    assert oidc.requests_to(INTROSPECT) == before + 2
    oidc.revoke(token, "infra-reader")
    assert_refused(bearer(token).get(MIGRATIONS), "no longer active")


def test_answers_are_cached_so_a_revoked_token_works_until_its_answer_expires(oidc: OidcProvider, settings):
    settings.OIDC_INTROSPECTION_CACHE_SECONDS = 60
    token = oidc.client_credentials("infra-reader")
    before = oidc.requests_to(INTROSPECT)
    for _ in range(3):
        assert bearer(token).get(MIGRATIONS).status_code == 200
    assert oidc.requests_to(INTROSPECT) == before + 1
    oidc.revoke(token, "infra-reader")
    assert bearer(token).get(MIGRATIONS).status_code == 200  # the cached answer still holds
    cache.clear()  # as when the cached answer expires
    assert_refused(bearer(token).get(MIGRATIONS), "no longer active")
    assert_refused(bearer(token).get(MIGRATIONS), "no longer active")  # the refusal is cached too
    assert oidc.requests_to(INTROSPECT) == before + 2


def test_an_unreachable_introspection_endpoint_refuses_with_503(oidc: OidcProvider, settings, closed_port):
    settings.OIDC_INTROSPECTION_CACHE_SECONDS = 0
    settings.OIDC_INTROSPECTION_ENDPOINT = f"http://127.0.0.1:{closed_port}/introspect"
    response = bearer(oidc.client_credentials("infra-reader")).get(MIGRATIONS)
    assert response.status_code == 503
    assert response.json()["error"] == "identity_provider_unavailable"
    assert set(response.json()) == {"error", "message", "details"}
