"""One way for a test to wait: poll a condition until it holds, never sleep a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
E = TypeVar("E", bound=Any)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 60,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it, or fail after ``timeout`` seconds.

    ``message`` may be a callable, called only on failure, so that it can show what the test was waiting on
    (a child process's output, the last status seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} within {timeout} s")
        time.sleep(interval)


def wait_finished(execution: E, timeout: float = 120) -> E:
    """Wait until a migration execution (a model instance, refreshed here) has finished; return it."""

    def finished() -> bool:
        execution.refresh_from_db()
        return execution.is_finished

    wait_until(
        finished, timeout=timeout, interval=0.2, message=lambda: f"execution {execution.pk} still {execution.status}"
    )
    return execution
