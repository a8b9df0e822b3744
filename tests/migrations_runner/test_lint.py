"""The lint policy on the scripts a run applies: in check_migration_sets, in plans and in runs (the rules
themselves are tested with the engine, in tests/engine/test_lint.py)."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from infra_site import roles
from migrations_runner import selectors, services
from migrations_runner.exceptions import LintFailed
from migrations_runner.models import MigrationExecution, Origin
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection


@pytest.fixture
def hazardous_set(sets_dir):
    """The shipped tenant set plus a V10 that builds an index without CONCURRENTLY on an existing table."""
    (sets_dir / "tenant" / "V10__index_titles.sql").write_text(
        "-- Titles are searched.\nCREATE INDEX tasks_title_idx ON tasks (title);\n"
    )
    return sets_dir


def test_check_migration_sets_lists_findings_and_fails_under_block(hazardous_set, settings):
    out = StringIO()
    call_command("check_migration_sets", stdout=out)
    assert "lint error: tenant/V10__index_titles.sql line 2: index-not-concurrent" in out.getvalue()
    settings.MIGRATION_LINT = "block"
    with pytest.raises(
        CommandError, match=re.escape("tenant/V10__index_titles.sql: line 2: lint index-not-concurrent")
    ):
        call_command("check_migration_sets", stdout=StringIO())
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_migration_sets", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["lint_policy"] == "block"
    assert [(f["script"], f["rule"], f["line"]) for f in report["lint"]] == [
        ("V10__index_titles.sql", "index-not-concurrent", 2)
    ]
    settings.MIGRATION_LINT = "off"
    assert "lint" not in _run_check()


def _run_check() -> str:
    out = StringIO()
    call_command("check_migration_sets", stdout=out)
    return out.getvalue()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_under_block_is_refused_before_any_target_is_touched(small_fleet, hazardous_set, settings, api_as):
    settings.MIGRATION_LINT = "block"
    selection = TargetSelection(scope="tenant", regions=["us-east"])
    before = _histories(small_fleet)
    with pytest.raises(LintFailed) as raised:
        services.execution_start(
            selection=selection, options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
        )
    assert raised.value.code == "lint_failed"
    assert [(f["script"], f["rule"], f["line"]) for f in raised.value.details["findings"]] == [
        ("V10__index_titles.sql", "index-not-concurrent", 2)
    ]
    assert MigrationExecution.objects.count() == 0
    assert _histories(small_fleet) == before

    client = api_as(roles.MIGRATIONS_READ, roles.MIGRATIONS_EXECUTE)
    response = client.post("/api/v1/migrations/execute", {"scope": "tenant", "regions": ["us-east"]}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "lint_failed"
    assert "V10__index_titles.sql line 2: index-not-concurrent" in response.json()["message"]
    plan = client.post("/api/v1/migrations/dynamic/plan", {"scope": "tenant", "regions": ["us-east"]}, format="json")
    assert plan.status_code == 200
    assert plan.json()["lint_blocked"] is True
    assert {f["rule"] for f in plan.json()["lint"]} == {"index-not-concurrent"}
    assert MigrationExecution.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_under_warn_goes_on_and_its_plan_preview_shows_the_findings(small_fleet, hazardous_set, settings):
    settings.MIGRATION_LINT = "warn"
    selection = TargetSelection(scope="tenant", regions=["us-east"])
    preview = selectors.plan_preview(selection)
    assert preview.lint_blocked is False
    assert [(f["script"], f["rule"], f["line"]) for f in preview.lint] == [
        ("V10__index_titles.sql", "index-not-concurrent", 2)
    ]
    assert preview.lint[0]["fix"].startswith("Use CREATE INDEX CONCURRENTLY")
    execution = services.execution_start(
        selection=selection, options=ExecutionOptions(), actor="t", origin=Origin.API, wait=True
    )
    assert execution.status == "completed"
    assert all(small_fleet.applied("shared-us", t.schema_name)[-1] == "10" for t in small_fleet.tenants_in("us-east"))


def _histories(fleet) -> list[list[str] | None]:
    """Each us-east tenant's applied versions (None without a history table)."""
    histories: list[list[str] | None] = []
    for tenant in fleet.tenants_in("us-east"):
        with fleet.connect("shared-us") as conn:
            table = f"{tenant.schema_name}.infra_schema_history"
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()[0]
        histories.append(fleet.applied("shared-us", tenant.schema_name) if exists else None)
    return histories
