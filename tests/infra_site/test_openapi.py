"""The OpenAPI schema builds with no warning or error (``spectacular --validate --fail-on-warn``) and declares the
security schemes and the error shape."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.qcluster import ROOT, control_env


def test_the_schema_builds_without_warnings_and_documents_errors_and_security(tmp_path):
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
    schemes = schema["components"]["securitySchemes"]
    assert schemes["keycloakBearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["basicAuth"]["scheme"] == "basic"
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"error", "message", "details"}
    cancel = schema["paths"]["/api/v1/migrations/{execution_id}/cancel/"]["post"]["responses"]
    assert {"202", "401", "403", "404", "409"} <= set(cancel)
    assert "201" in schema["paths"]["/api/v1/tenants/provision/"]["post"]["responses"]
