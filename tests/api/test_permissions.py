"""Every endpoint under /api/v1/ and the role it needs, in one table: anonymous callers get 401, users missing the
role 403 (naming it), users holding it get past the permission check.

An endpoint that the table does not list fails the suite, so a new endpoint cannot ship without a declared role.
"""

from __future__ import annotations

import uuid

import pytest
from drf_spectacular.generators import EndpointEnumerator
from rest_framework.schemas.generators import is_api_view
from rest_framework.test import APIClient

from infra_site import roles

pytestmark = pytest.mark.django_db

PUBLIC = None  # anyone, signed in or not (the API docs, served outside production only)
SIGNED_IN: tuple[str, ...] = ()  # any signed-in user, whatever roles they hold

# (method, path) -> the roles needed (all of them). Paths as the OpenAPI schema writes them.
REQUIRED_ROLES: dict[tuple[str, str], tuple[str, ...] | None] = {
    ("GET", "/api/v1/auth/me/"): SIGNED_IN,
    ("GET", "/api/v1/schema/"): PUBLIC,
    ("GET", "/api/v1/docs/"): PUBLIC,
    # The registry: connections and tenants.
    ("GET", "/api/v1/databases/"): (roles.DATABASES_READ,),
    ("POST", "/api/v1/databases/"): (roles.DATABASES_MANAGE,),
    ("GET", "/api/v1/databases/{id}/"): (roles.DATABASES_READ,),
    ("PUT", "/api/v1/databases/{id}/"): (roles.DATABASES_MANAGE,),
    ("PATCH", "/api/v1/databases/{id}/"): (roles.DATABASES_MANAGE,),
    ("DELETE", "/api/v1/databases/{id}/"): (roles.DATABASES_MANAGE,),
    ("POST", "/api/v1/databases/{id}/test/"): (roles.DATABASES_MANAGE,),
    ("GET", "/api/v1/tenants/"): (roles.DATABASES_READ,),
    ("POST", "/api/v1/tenants/"): (roles.DATABASES_MANAGE,),
    ("GET", "/api/v1/tenants/{slug}/"): (roles.DATABASES_READ,),
    ("PUT", "/api/v1/tenants/{slug}/"): (roles.DATABASES_MANAGE,),
    ("PATCH", "/api/v1/tenants/{slug}/"): (roles.DATABASES_MANAGE,),
    ("POST", "/api/v1/tenants/provision/"): (roles.DATABASES_MANAGE, roles.MIGRATIONS_EXECUTE),
    ("POST", "/api/v1/tenants/{slug}/migrate/"): (roles.MIGRATIONS_EXECUTE,),
    # Migrations: what the fleet looks like, and runs.
    ("GET", "/api/v1/migrations/"): (roles.MIGRATIONS_READ,),
    ("GET", "/api/v1/migrations/status/{execution_id}/"): (roles.MIGRATIONS_READ,),
    ("GET", "/api/v1/migrations/{execution_id}/targets/"): (roles.MIGRATIONS_READ,),
    ("GET", "/api/v1/migrations/sets/"): (roles.MIGRATIONS_READ,),
    ("GET", "/api/v1/migrations/health/"): (roles.MIGRATIONS_READ,),
    ("GET", "/api/v1/migrations/dynamic/status/"): (roles.MIGRATIONS_READ,),
    ("POST", "/api/v1/migrations/dynamic/plan/"): (roles.MIGRATIONS_READ,),
    # Schema fingerprints: the recorded report, and scans (they read the fleet, change nothing on it, load it).
    ("GET", "/api/v1/migrations/fingerprints/"): (roles.MIGRATIONS_READ,),
    ("GET", "/api/v1/migrations/fingerprints/scan/"): (roles.MIGRATIONS_READ,),
    ("POST", "/api/v1/migrations/fingerprints/scan/"): (roles.MIGRATIONS_EXECUTE,),
    ("GET", "/api/v1/migrations/fingerprints/scans/{scan_id}/"): (roles.MIGRATIONS_READ,),
    ("POST", "/api/v1/migrations/execute/"): (roles.MIGRATIONS_EXECUTE,),
    ("POST", "/api/v1/migrations/{execution_id}/cancel/"): (roles.MIGRATIONS_EXECUTE,),
    ("POST", "/api/v1/migrations/{execution_id}/retry/"): (roles.MIGRATIONS_EXECUTE,),
    ("POST", "/api/v1/migrations/{execution_id}/continue/"): (roles.MIGRATIONS_EXECUTE,),
    ("POST", "/api/v1/migrations/{execution_id}/abort/"): (roles.MIGRATIONS_EXECUTE,),
    ("POST", "/api/v1/migrations/rollback/"): (roles.MIGRATIONS_EXECUTE,),
    # Taking over targets migrated elsewhere: Flyway adoption and baselines.
    ("POST", "/api/v1/migrations/adopt/"): (roles.MIGRATIONS_MANAGE,),
    ("POST", "/api/v1/migrations/baseline/"): (roles.MIGRATIONS_MANAGE,),
    # Schedules.
    ("GET", "/api/v1/schedules/"): (roles.MIGRATIONS_READ,),
    ("POST", "/api/v1/schedules/"): (roles.MIGRATIONS_MANAGE,),
    ("GET", "/api/v1/schedules/{id}/"): (roles.MIGRATIONS_READ,),
    ("PUT", "/api/v1/schedules/{id}/"): (roles.MIGRATIONS_MANAGE,),
    ("PATCH", "/api/v1/schedules/{id}/"): (roles.MIGRATIONS_MANAGE,),
    ("DELETE", "/api/v1/schedules/{id}/"): (roles.MIGRATIONS_MANAGE,),
}

# Ids that name nothing: a request that passes the permission check then gets a 404 (or a 400 for its body).
PATH_VALUES = {
    "{id}": "123456789",
    "{slug}": "no-such-tenant",
    "{execution_id}": str(uuid.uuid4()),
    "{scan_id}": str(uuid.uuid4()),
}


class _ApiViews(EndpointEnumerator):
    """Every view under /api/v1/, including any left out of the OpenAPI schema."""

    def should_include_endpoint(self, path, callback) -> bool:
        return path.startswith("/api/v1/") and ".{format}" not in path

    def get_allowed_methods(self, callback) -> list[str]:
        # A plain Django view has no DRF method list: it is listed (and so must be in the table) as GET.
        return super().get_allowed_methods(callback) if is_api_view(callback) else ["GET"]


def served_endpoints() -> set[tuple[str, str]]:
    """The (method, path) of every endpoint the URL configuration serves under /api/v1/."""
    return {(method, path.replace("{pk}", "{id}")) for path, _, method, _ in _ApiViews().get_api_endpoints()}


def _url(path: str) -> str:
    for placeholder, value in PATH_VALUES.items():
        path = path.replace(placeholder, value)
    return path


def _send(client: APIClient, method: str, path: str):
    return client.generic(method, _url(path), data="{}", content_type="application/json")


def _role_sets_lacking(required: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Of no role and each single role, those whose hierarchy does not give every role in ``required``."""
    candidates = [(), *((role,) for role in roles.ALL_ROLES)]
    return [held for held in candidates if not set(required) <= roles.expand(held)]


def test_every_api_endpoint_declares_the_role_it_needs():
    served = served_endpoints()
    assert served - REQUIRED_ROLES.keys() == set(), "endpoints missing from REQUIRED_ROLES"
    assert REQUIRED_ROLES.keys() - served == set(), "REQUIRED_ROLES lists endpoints that are not served"


@pytest.mark.parametrize(
    ("method", "path", "required"),
    [pytest.param(method, path, needed, id=f"{method} {path}") for (method, path), needed in REQUIRED_ROLES.items()],
)
def test_each_endpoint_refuses_callers_without_its_role(method, path, required, api_as, settings):
    settings.MIGRATION_EXECUTOR = "inline"
    anonymous = _send(APIClient(), method, path)
    if required is PUBLIC:
        assert anonymous.status_code == 200, anonymous.content
        return
    assert anonymous.status_code == 401, anonymous.content
    assert anonymous.json()["error"] == "not_authenticated"

    for held in _role_sets_lacking(required):
        refused = _send(api_as(*held), method, path)
        assert refused.status_code == 403, (held, refused.content)
        assert refused.json()["details"]["required_role"] in required, held

    # With the roles, the request gets past the permission check: 2xx, or a 4xx for the made-up id or body.
    allowed = _send(api_as(*required), method, path)
    assert allowed.status_code not in (401, 403), allowed.content
    assert allowed.status_code < 500, allowed.content
