"""The OpenAPI schema builds with no warning or error (``spectacular --validate --fail-on-warn``), is a valid
OpenAPI 3.0 document (openapi-spec-validator), and declares the security schemes and the error shape."""

from __future__ import annotations

import subprocess
import sys

import yaml
from openapi_spec_validator import OpenAPIV30SpecValidator, validate

from tests.support.qcluster import ROOT, control_env


def test_the_schema_builds_without_warnings_validates_as_openapi_3_0_and_documents_errors(tmp_path):
    target = tmp_path / "schema.yaml"
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "spectacular", "--validate", "--fail-on-warn", "--file", str(target)],
        cwd=ROOT,
        env=control_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr
    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"].startswith("3.0.")
    validate(schema, cls=OpenAPIV30SpecValidator)  # raises OpenAPIValidationError, naming the offending path
    schemes = schema["components"]["securitySchemes"]
    assert schemes["keycloakBearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["basicAuth"]["scheme"] == "basic"
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"error", "message", "details"}
    cancel = schema["paths"]["/api/v1/migrations/{execution_id}/cancel/"]["post"]["responses"]
    assert {"202", "401", "403", "404", "409"} <= set(cancel)
    provision = schema["paths"]["/api/v1/tenants/provision/"]["post"]["responses"]
    assert "201" in provision
    # An id in the body that names nothing is a 404; a status a view declares by its description gets the error shape.
    assert provision["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "404" in schema["paths"]["/api/v1/migrations/rollback/"]["post"]["responses"]
