"""What runs when an execution finishes is registered per purpose by the module that owns it."""

from __future__ import annotations

import pytest

from migrations_runner.models import ExecutionStatus, MigrationExecution, Purpose
from migrations_runner.services import completion
from migrations_runner.services.executions import rollback_finished
from migrations_runner.services.provisioning import provisioning_finish


def test_the_owning_modules_register_their_hooks_for_their_purpose_only():
    assert provisioning_finish in completion._hooks[Purpose.PROVISIONING]
    assert rollback_finished in completion._hooks[Purpose.ROLLBACK]
    assert completion._hooks.get(Purpose.MIGRATION, []) == []
    assert completion._hooks.get(Purpose.RETRY, []) == []


@pytest.mark.django_db
def test_a_finished_execution_runs_the_hooks_of_its_purpose_and_no_other(monkeypatch):
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(completion, "_hooks", completion.defaultdict(list))

    @completion.on_finished(Purpose.RETRY)
    def retried(execution: MigrationExecution) -> None:
        seen.append(("retry", str(execution.pk)))

    completion.on_finished(Purpose.RETRY)(retried)  # registering twice runs it once
    retry = MigrationExecution.objects.create(purpose=Purpose.RETRY, executed_by="t", status=ExecutionStatus.COMPLETED)
    other = MigrationExecution.objects.create(executed_by="t", status=ExecutionStatus.COMPLETED)
    completion.execution_finished(retry)
    completion.execution_finished(other)
    assert seen == [("retry", str(retry.pk))]
