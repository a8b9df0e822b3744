"""``infra_site.bulk.bulk_insert`` stores exactly what Django's ``bulk_create`` stores, field by field, for the
models that planning inserts in bulk (target runs: auto keys, JSON lists and dicts, nulls; executions: UUID keys
with a default, ``auto_now_add``); ``infra_site.bulk.maker`` makes the instances the constructor makes."""

import datetime as dt
import uuid

import pytest
from django.db import transaction
from django.db.models.signals import post_init

from infra_site.bulk import bulk_insert, maker
from migrations_runner.models import MigrationExecution, TargetRun
from tests.support.bulk import JSON_VALUES, bulk_runs, stored_fields

pytestmark = pytest.mark.django_db


def test_target_runs_are_stored_as_bulk_create_stores_them(registered):
    connection = registered["listed-eu"]
    ours = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    theirs = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    with transaction.atomic():
        bulk_insert(bulk_runs(ours, connection), batch_size=4)  # two batches
    TargetRun.objects.bulk_create(bulk_runs(theirs, connection))

    mine = list(ours.targets.order_by("id"))
    assert [r.schema_name for r in mine] == [f"tenant_{n}" for n in range(6)]  # in insertion order
    assert stored_fields(mine) == stored_fields(theirs.targets.order_by("id"))
    assert mine[3].error == {"kind": "sql", "message": "é 3", "sqlstate": "42P01"}
    assert mine[0].pending_versions == ["1", "2", "R__views.sql"]
    assert mine[1].completed_at == dt.datetime(2026, 12, 3, 6, 0, 1, 123000, tzinfo=dt.UTC)


def test_a_model_with_a_uuid_key_keeps_its_keys_and_auto_now_add_is_set():
    executions = [
        MigrationExecution(scope="tenant", executed_by="t", metadata={"n": n, "sets": {"tenant": [n]}})
        for n in range(3)
    ]
    before = dt.datetime.now(dt.UTC)
    with transaction.atomic():
        bulk_insert(executions)

    stored = MigrationExecution.objects.in_bulk([e.pk for e in executions])
    assert len(stored) == 3
    for execution in executions:
        assert isinstance(execution.pk, uuid.UUID)
        assert stored[execution.pk].metadata == execution.metadata
        assert stored[execution.pk].created_at >= before - dt.timedelta(seconds=1)


def test_json_values_that_compare_equal_but_encode_differently_are_stored_each_as_itself(registered):
    connection = registered["listed-eu"]
    values = JSON_VALUES
    ours = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    runs = [
        TargetRun(execution=ours, connection=connection, schema_name=f"s{n}", database_type="tenant", error=value)
        for n, value in enumerate(values)
    ]
    with transaction.atomic():
        bulk_insert(runs)
    stored = [r.error for r in ours.targets.order_by("id")]
    assert [repr(v) for v in stored] == [repr(v) for v in values]


def _attributes(obj) -> dict:
    return {name: value for name, value in vars(obj).items() if name != "_state"}


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"schema_name": "tenant_1", "database_type": "tenant", "phase": 2, "region": "eu-west"},
        {"schema_name": "s", "pending_versions": ["2", "3"], "status": "succeeded", "error": {"kind": "drift"}},
        {"tenant_id": 7, "wave": 1, "depends_on": [4, 5], "from_version": "1"},
    ],
)
def test_a_maker_makes_what_the_constructor_makes(registered, values):
    connection = registered["listed-eu"]
    execution = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    made = maker(TargetRun, execution=execution, connection=connection)(**values)
    constructed = TargetRun(execution=execution, connection=connection, **values)

    assert _attributes(made) == _attributes(constructed)
    assert (made._state.adding, made._state.db) == (True, None)
    assert made._state.fields_cache == {"execution": execution, "connection": connection}
    assert made.execution is execution  # from the cache: no query
    assert made.pk is None


def test_each_made_instance_has_its_own_mutable_defaults_and_state(registered):
    execution = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    make = maker(TargetRun, execution=execution)
    first, second = make(schema_name="a"), make(schema_name="b")
    first.pending_versions.append("9")
    first.applied_versions.append({"version": "9"})
    first._state.adding = False
    assert (second.pending_versions, second.applied_versions, second.depends_on) == ([], [], [])
    assert second._state.adding is True
    first.connection = registered["listed-eu"]
    assert "connection" not in second._state.fields_cache
    assert maker(TargetRun, execution=execution, depends_on=[1])(schema_name="c").depends_on == [1]

    made = maker(MigrationExecution, scope="tenant", executed_by="t")
    one, two = made(), made()
    assert one.pk != two.pk  # a callable default (uuid4) is called for each
    one.metadata["n"] = 1
    assert two.metadata == {}


def test_a_maker_uses_the_constructor_while_something_listens_to_post_init(registered):
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance.schema_name)

    execution = MigrationExecution.objects.create(scope="tenant", executed_by="t")
    post_init.connect(receiver, sender=TargetRun)
    try:
        maker(TargetRun, execution=execution)(schema_name="heard")
    finally:
        post_init.disconnect(receiver, sender=TargetRun)
    assert "heard" in seen
