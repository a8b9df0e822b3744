"""Bearer tokens on the REST API, issued by a real OpenID Connect provider and validated locally."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from infra_site import roles
from infra_site.models import OidcIdentity
from migrations_runner.models import MigrationExecution
from tests.oidc_provider.launcher import OTHER_REALM, OidcProvider
from tests.support.oidc import MIGRATIONS, assert_refused, bearer
from tests.support.waiting import wait_until


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def forged(claims: dict, *, kid: str = "forged-key") -> str:
    """A token with real-looking claims signed by a key the provider never published."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def user_token(oidc: OidcProvider):
    """Sign a user in at the provider with the given roles; return their access token."""

    def issue(username: str, *, realm_roles=(), client_roles=()) -> str:
        password = f"{username}-password"
        oidc.put_user(username, password, realm_roles=realm_roles, client_roles=client_roles)
        return oidc.user_tokens(username, password)["access_token"]

    return issue


@pytest.mark.django_db
def test_a_user_token_with_migrations_read_lists_executions(user_token):
    token = user_token("reader-1", realm_roles=[roles.MIGRATIONS_READ])
    response = bearer(token).get(MIGRATIONS)
    assert response.status_code == 200, response.content
    user = OidcIdentity.objects.get(subject=claims_of(token)["sub"]).user
    assert user.username == "reader-1"
    assert set(user.groups.values_list("name", flat=True)) == {roles.MIGRATIONS_READ}


@pytest.mark.django_db
def test_the_same_user_without_the_role_gets_403_naming_it(user_token):
    assert bearer(user_token("reader-2", realm_roles=[roles.MIGRATIONS_READ])).get(MIGRATIONS).status_code == 200
    token = user_token("reader-2", realm_roles=[roles.DATABASES_READ])
    response = bearer(token).get(MIGRATIONS)
    assert response.status_code == 403
    assert response.json()["details"] == {"required_role": roles.MIGRATIONS_READ}
    assert roles.MIGRATIONS_READ in response.json()["message"]
    user = OidcIdentity.objects.get(subject=claims_of(token)["sub"]).user
    assert set(user.groups.values_list("name", flat=True)) == {roles.DATABASES_READ}


@pytest.mark.django_db
def test_client_roles_count_and_infrastructure_admin_makes_a_superuser(user_token):
    token = user_token("boss", client_roles=[roles.INFRASTRUCTURE_ADMIN, "unrelated-role"])
    assert bearer(token).get(MIGRATIONS).status_code == 200
    user = User.objects.get(username="boss")
    assert user.is_superuser
    assert user.is_staff
    assert set(user.groups.values_list("name", flat=True)) == {roles.INFRASTRUCTURE_ADMIN}
    bearer(user_token("boss", client_roles=[roles.MIGRATIONS_READ])).get(MIGRATIONS)
    user.refresh_from_db()
    assert not user.is_superuser
    assert user.is_staff


@pytest.mark.django_db
def test_users_are_matched_by_subject_not_by_username_or_email(user_token, make_user):
    local = make_user(roles.INFRASTRUCTURE_ADMIN, username="carol")
    token = user_token("carol", realm_roles=[roles.MIGRATIONS_READ])
    assert bearer(token).get(MIGRATIONS).status_code == 200
    linked = OidcIdentity.objects.get(subject=claims_of(token)["sub"]).user
    assert linked != local
    assert linked.username.startswith("carol-")
    assert not linked.is_superuser


@pytest.mark.django_db
def test_an_expired_token_is_refused(oidc, settings):
    # A real token of the provider, from a client whose tokens live two seconds; the leeway is
    # switched off so the test need not wait it out (the leeway itself is PyJWT's, tested there).
    settings.OIDC_CLOCK_LEEWAY = 0
    token = oidc.client_credentials("infra-short")
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] <= 2
    assert bearer(token).get(MIGRATIONS).status_code == 200

    def refused():
        response = bearer(token).get(MIGRATIONS)
        return response if response.status_code != 200 else None

    assert_refused(wait_until(refused, timeout=10, interval=0.2, message="the token was still accepted"), "expired")


@pytest.mark.django_db
def test_a_token_of_another_realm_is_refused_for_its_issuer(oidc):
    # The other realm signs with the same keys: only the issuer check can tell its tokens apart.
    token = oidc.client_credentials("infra-reader", realm=OTHER_REALM)
    assert_refused(bearer(token).get(MIGRATIONS), "was not issued by")


@pytest.mark.django_db
def test_a_token_for_another_audience_is_refused(oidc):
    token = oidc.client_credentials("other-app")
    assert claims_of(token)["aud"] == ["other-api", "account"]
    assert_refused(bearer(token).get(MIGRATIONS), "not meant for the client")


@pytest.mark.django_db
def test_a_token_with_a_tampered_payload_fails_its_signature(oidc):
    header, payload, signature = oidc.client_credentials("infra-reader").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["resource_access"]["infra-app"]["roles"] = [roles.INFRASTRUCTURE_ADMIN]
    tampered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_refused(bearer(f"{header}.{tampered}.{signature}").get(MIGRATIONS), "signature is invalid")


@pytest.mark.django_db
def test_unsigned_and_hmac_tokens_are_refused(oidc):
    claims = claims_of(oidc.client_credentials("infra-reader"))
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert_refused(bearer(unsigned).get(MIGRATIONS), "must be signed with RS256")
    hmac = jwt.encode(claims, "guessable-secret-of-32-bytes-or-more", algorithm="HS256")
    assert_refused(bearer(hmac).get(MIGRATIONS), "must be signed with RS256")


@pytest.mark.django_db
def test_a_token_signed_by_an_unknown_key_is_refused(oidc):
    claims = claims_of(oidc.client_credentials("infra-reader"))
    assert_refused(bearer(forged(claims)).get(MIGRATIONS), "key the identity provider does not publish")


@pytest.mark.django_db
def test_garbage_and_missing_credentials_get_401(oidc):
    assert_refused(bearer("not-a-jwt").get(MIGRATIONS), "not a well-formed JWT")
    missing = APIClient().get(MIGRATIONS)
    assert missing.status_code == 401
    assert missing.json()["error"] == "not_authenticated"
    assert missing["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.django_db
def test_after_key_rotation_new_tokens_work_with_one_jwks_fetch_and_cached_keys_cost_no_call(oidc, settings):
    settings.OIDC_JWKS_REFRESH_INTERVAL = 0  # this test's rotation comes right after the first fetch
    old = oidc.client_credentials("infra-reader")
    assert bearer(old).get(MIGRATIONS).status_code == 200
    before = oidc.requests_to()
    for _ in range(25):
        assert bearer(old).get(MIGRATIONS).status_code == 200
    assert oidc.requests_to() == before, "a request with cached keys reached the provider"

    new_kid = oidc.rotate_keys()
    new = oidc.client_credentials("infra-reader")
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    jwks_fetches, calls = oidc.requests_to("/certs"), oidc.requests_to()
    for _ in range(10):
        assert bearer(new).get(MIGRATIONS).status_code == 200
    assert bearer(old).get(MIGRATIONS).status_code == 200
    assert oidc.requests_to("/certs") == jwks_fetches + 1
    assert oidc.requests_to() == calls + 1


@pytest.mark.django_db
def test_a_service_account_with_migrations_execute_starts_an_execution(oidc, small_fleet):
    token = oidc.client_credentials("infra-ci")
    assert "email" not in claims_of(token)
    response = bearer(token).post("/api/v1/migrations/execute/", {"scope": "tenant", "dry_run": True}, format="json")
    assert response.status_code == 202, response.content
    execution = MigrationExecution.objects.get(pk=response.json()["id"])
    assert execution.executed_by == "service-account-infra-ci"


@pytest.mark.django_db
def test_bearer_tokens_are_refused_when_oidc_is_not_configured(oidc, settings):
    token = oidc.client_credentials("infra-reader")
    settings.KEYCLOAK_URL = ""
    assert_refused(bearer(token).get(MIGRATIONS), "OpenID Connect is not configured")
