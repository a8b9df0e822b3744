"""The control-database retry: a lane's steps outlive a short outage of the control database."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db import connection as control_db

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

CONTROL_RETRY_MAX_S = 5.0  # longest pause between attempts to reach the control database again


def control_retry(action: Callable[P, T]) -> Callable[P, T]:
    """Wrap a control-database step so that it is retried (whole) while the control database is unreachable.

    A lane that has applied a target must not lose its outcome to a short outage of the control database
    (a restart, a fail-over): it reconnects and tries again, up to ``MIGRATION_CONTROL_DB_WAIT`` seconds.
    Returns the wrapped step, which returns what ``action`` returns.
    """

    @functools.wraps(action)
    def retried(*args: P.args, **kwargs: P.kwargs) -> T:
        deadline = time.monotonic() + settings.MIGRATION_CONTROL_DB_WAIT
        pause = 0.2
        while True:
            try:
                return action(*args, **kwargs)
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() >= deadline:
                    raise
                logger.warning("control database unreachable; retrying", extra={"error": str(exc)[:200]})
                control_db.close()
                time.sleep(pause)
                pause = min(pause * 2, CONTROL_RETRY_MAX_S)

    return retried
