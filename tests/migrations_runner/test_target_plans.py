"""``target_plans`` works a fleet's plan out once per distinct history, and still per target where a repeatable
script's placeholders make two targets with the same history differ (no database: states built in memory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrations_runner import selectors
from migrations_runner.engine.history import SchemaState
from migrations_runner.engine.sets import Version, load_set
from migrations_runner.engine.targets import Target


def _target(schema: str) -> Target:
    return Target(
        connection_id="00000000-0000-0000-0000-000000000001",
        connection_name="shared-eu",
        database_type="tenant",
        region="eu-west",
        schema=schema,
        tenant_slug=schema.removeprefix("tenant_"),
        tenant_id=1,
        create_schema=True,
    )


def _set(folder: Path, repeatable: str):
    (folder / "tenant").mkdir(parents=True)
    (folder / "tenant" / "V1__a.sql").write_text("CREATE TABLE a (x int);\n")
    (folder / "tenant" / "V2__b.sql").write_text("CREATE TABLE b (x int);\n")
    (folder / "tenant" / "R__views.sql").write_text(repeatable)
    return load_set(folder / "tenant", "tenant")


def _state(schema: str, mset, repeatable_checksum: str, signature: str = "same") -> SchemaState:
    v1 = mset.versions[0]
    return SchemaState(
        schema,
        exists=True,
        has_history=True,
        applied={Version.parse("1"): v1.checksum},
        applied_scripts={Version.parse("1"): v1.filename},
        repeatables={"R__views.sql": repeatable_checksum},
        signature=signature,
    )


@pytest.mark.parametrize(
    "repeatable",
    ["CREATE OR REPLACE VIEW v AS SELECT 1;\n", "CREATE OR REPLACE VIEW v AS SELECT '${tenant_slug}';\n"],
    ids=["plain", "with-placeholders"],
)
def test_the_plans_equal_one_plan_per_target(tmp_path, repeatable):
    mset = _set(tmp_path, repeatable)
    targets = [_target(f"tenant_{n}") for n in ("a", "b", "c")]
    # Every schema holds the history the first one would record: the same text, so the same signature.
    context = targets[0].placeholders(timestamp="2026-12-03 06:00:00", environment="testing")
    recorded = mset.repeatables[0].checksum_for(context)
    states = {t.key: _state(t.schema, mset, recorded) for t in targets}
    sets = {"tenant": mset}

    plans = selectors.target_plans(targets, states, sets)

    for target in targets:
        alone = selectors.target_plan(target, states[target.key], mset)
        assert plans[target.key] == alone
        assert plans[target.key].target == f"shared-eu/{target.schema}"
        assert plans[target.key].tenant == target.tenant_slug
    pending = {t.schema: plans[t.key].pending for t in targets}
    if "${" in repeatable:
        # The repeatable renders differently per tenant: only the first one's recorded checksum matches it.
        assert pending == {"tenant_a": ["2"], "tenant_b": ["2", "R__views.sql"], "tenant_c": ["2", "R__views.sql"]}
    else:
        assert pending == {"tenant_a": ["2"], "tenant_b": ["2"], "tenant_c": ["2"]}


def test_histories_that_differ_are_planned_apart(tmp_path):
    mset = _set(tmp_path, "CREATE OR REPLACE VIEW v AS SELECT 1;\n")
    a, b = _target("tenant_a"), _target("tenant_b")
    behind = _state("tenant_b", mset, mset.repeatables[0].checksum, signature="other")
    behind.applied.clear()
    behind.applied_scripts.clear()
    states = {a.key: _state("tenant_a", mset, mset.repeatables[0].checksum), b.key: behind}

    plans = selectors.target_plans([a, b], states, {"tenant": mset})

    assert plans[a.key].pending == ["2"]
    assert plans[b.key].pending == ["1", "2"]
    assert plans[b.key].current_version is None
