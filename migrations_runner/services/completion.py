"""What runs when an execution finishes, registered by the module that owns the execution's purpose.

``finish_execution`` (``services/targets.py``) gives an execution its final status, then calls the hooks of
its ``purpose``: the rollback module marks the rolled-back execution, the provisioning module activates its
tenant. A hook is a plain function of the finished execution; it must not raise for an outcome it dislikes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from migrations_runner.models import MigrationExecution, Purpose

FinishHook = Callable[[MigrationExecution], None]

_hooks: dict[str, list[FinishHook]] = defaultdict(list)


def on_finished(purpose: Purpose) -> Callable[[FinishHook], FinishHook]:
    """Register the decorated function to run when an execution of ``purpose`` finishes (once per function)."""

    def register(hook: FinishHook) -> FinishHook:
        if hook not in _hooks[purpose]:
            _hooks[purpose].append(hook)
        return hook

    return register


def execution_finished(execution: MigrationExecution) -> None:
    """Run the hooks registered for the finished execution's purpose, in registration order."""
    for hook in _hooks.get(execution.purpose, ()):
        hook(execution)
