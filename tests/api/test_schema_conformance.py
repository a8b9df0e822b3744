"""Every operation of the OpenAPI schema, fuzzed by schemathesis as an admin (HTTP Basic) and anonymously: no 500,
only documented status codes, and content types and bodies as the schema declares them.

The cases come from the schema the API serves (drf-spectacular's generator) and go to the Django WSGI application
in this process. Where a path has parameters, half of the cases use ids that exist (a small fleet, two executions,
a schedule), so both the 2xx and the 404 answers are checked. Each operation gets at most ``MAX_EXAMPLES`` valid
and ``MAX_EXAMPLES`` invalid cases, seeded and not shrunk, so a run is bounded and the same every time.

schemathesis' own pytest integration is not used: ``schema.parametrize()`` would build the fleet again for each
of the ~40 operations, and ``schemathesis.pytest.from_fixture`` does not run under pytest 9.2 (it reads
``Node._nodeid``, which pytest 9.2 no longer has). One test per identity runs the operations as subtests instead.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable

import hypothesis
import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from health import probes
from migrations_runner import services
from migrations_runner.models import Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SEED = 20260101
MAX_EXAMPLES = 5  # per operation and generation mode (valid, invalid)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ADMIN = "fuzz-admin"
ADMIN_PASSWORD = "fuzz-admin-password"


@pytest.fixture(scope="module")
def api_schema() -> schemathesis.BaseSchema:
    """The schema /api/v1/schema/ serves, loaded by schemathesis."""
    raw = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    # The tests send credentials (or none) themselves: none are generated from the security schemes.
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    return schemathesis.openapi.from_dict(raw, config=config)


@pytest.fixture
def local_only(settings) -> None:
    """Generated connection hosts other than 127.0.0.1 are refused before any connection; no OpenID provider."""
    settings.CONNECTION_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.KEYCLOAK_URL = ""
    settings.MIGRATION_EXECUTOR = "inline"


@pytest.fixture
def real_ids(small_fleet, local_only) -> dict[str, list[str]]:
    """Path parameter name -> values that exist: connections, tenants, executions, a schedule, health services."""
    tenant_run = services.execution_start(
        selection=TargetSelection(scope="tenant", tenants=["us000"]),
        options=ExecutionOptions(dry_run=True),
        actor="fuzz",
        origin=Origin.API,
        wait=True,
    )
    fleet_run = services.execution_start(
        selection=TargetSelection(scope="all"),
        options=ExecutionOptions(dry_run=True),
        actor="fuzz",
        origin=Origin.API,
        wait=True,
    )
    schedule = services.schedule_create(
        actor="fuzz", name="fuzz-nightly", selection=TargetSelection(scope="all"), cron_expression="0 3 * * *"
    )
    return {
        "id": [str(c.pk) for c in small_fleet.connections.values()] + [str(schedule.pk)],
        "slug": [t.slug for t in small_fleet.tenants],
        "execution_id": [str(tenant_run.pk), str(fleet_run.pk)],
        "name": [*probes.SERVICES, "connection:shared-us"],
    }


def _strategy(operation, mode: GenerationMode, real_ids: dict[str, list[str]]) -> st.SearchStrategy:
    """Cases of ``operation``; where its path has parameters with known values, half of the cases use them."""
    generated = operation.as_strategy(generation_mode=mode)
    names = [parameter.name for parameter in operation.path_parameters]
    if not names or not all(real_ids.get(name) for name in names):
        return generated
    real = st.fixed_dictionaries({name: st.sampled_from(real_ids[name]) for name in names}).flatmap(
        lambda values: operation.as_strategy(generation_mode=mode, path_parameters=values)
    )
    return st.one_of(generated, real)


def _send_examples(strategy: st.SearchStrategy, mode: GenerationMode, send: Callable) -> int:
    """Send up to ``MAX_EXAMPLES`` cases drawn from ``strategy``; return how many were sent."""
    sent = 0

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.seed(SEED)
    @hypothesis.given(case=strategy)
    def run(case) -> None:
        nonlocal sent
        sent += 1
        send(case)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # An operation with nothing that can be made invalid (no parameter, no body) has no invalid case.
        if mode is GenerationMode.POSITIVE:
            raise
    return sent


def _fuzz(api_schema, real_ids: dict[str, list[str]], send: Callable, subtests) -> Counter[str]:
    """Run every operation, deletes last (so the others still see the fleet); return the cases sent per operation."""
    operations = sorted(
        (result.ok() for result in api_schema.get_all_operations()), key=lambda op: op.method == "delete"
    )
    sent: Counter[str] = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with subtests.test(msg=f"{operation.label} ({mode.value})"):
                sent[operation.label] += _send_examples(_strategy(operation, mode, real_ids), mode, send)
    print(json.dumps({"operations": len(sent), "examples": sum(sent.values())}))
    return sent


def test_every_operation_conforms_to_the_schema_for_an_admin(api_schema, real_ids, make_user, subtests):
    make_user("infrastructure:admin", username=ADMIN, password=ADMIN_PASSWORD)
    credentials = base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()
    app = WSGIHandler()

    def send(case) -> None:
        # The WSGI transport does not decode a gzip body as an HTTP client does: ask for the body as it is (the
        # compression is tests/infra_site/test_middleware.py's).
        headers = {"Authorization": f"Basic {credentials}", "Accept-Encoding": "identity"}
        case.call_and_validate(headers=headers, checks=CHECKS, app=app)

    sent = _fuzz(api_schema, real_ids, send, subtests)
    assert len(sent) == len(list(api_schema.get_all_operations()))


def test_every_operation_conforms_to_the_schema_anonymously(api_schema, local_only, subtests):
    app = WSGIHandler()

    def send(case) -> None:
        case.call_and_validate(headers={"Accept-Encoding": "identity"}, checks=CHECKS, app=app)

    sent = _fuzz(api_schema, {}, send, subtests)
    assert len(sent) == len(list(api_schema.get_all_operations()))
