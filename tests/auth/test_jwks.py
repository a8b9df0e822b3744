"""The signing-key cache: no network call for known keys, and made-up key ids cannot hammer the provider."""

from __future__ import annotations

import jwt
import pytest

from infra_site.auth.jwks import JwksCache, UnknownSigningKey
from tests.oidc_provider.launcher import OidcProvider


@pytest.mark.django_db
def test_unknown_key_ids_refetch_the_jwks_at_most_once_per_interval(oidc: OidcProvider, settings):
    settings.OIDC_JWKS_REFRESH_INTERVAL = 60
    cache = JwksCache(oidc.endpoint("certs"))
    kid = jwt.get_unverified_header(oidc.client_credentials("infra-reader"))["kid"]
    fetches = oidc.requests_to("/certs")
    assert cache.signing_key(kid).key_id == kid
    for attempt in range(5):
        with pytest.raises(UnknownSigningKey):
            cache.signing_key(f"made-up-{attempt}")
        assert cache.signing_key(kid).key_id == kid
    assert oidc.requests_to("/certs") == fetches + 1


@pytest.mark.django_db
def test_keys_older_than_the_maximum_age_are_refetched(oidc: OidcProvider, settings):
    cache = JwksCache(oidc.endpoint("certs"))
    kid = jwt.get_unverified_header(oidc.client_credentials("infra-reader"))["kid"]
    cache.signing_key(kid)
    fetches = oidc.requests_to("/certs")
    settings.OIDC_JWKS_MAX_AGE = 0
    cache.signing_key(kid)
    assert oidc.requests_to("/certs") == fetches + 1
