"""Room in this process's pool of control-database connections for threads that each hold one for long.

A web process or a command on a PostgreSQL control database takes its connections from a pool of at most
``DB_POOL_MAX_SIZE`` (settings), sized for requests that hold one briefly. Lanes run as threads of the process
(``ThreadHost``) hold theirs while they work: a lane, its control thread and its fingerprint thread one each.
More of them than the pool holds would wait for one until the pool's timeout, while their leases expired and
their targets were failed as lost. ``room_for`` grows the pool by what such threads need while they run and
gives the room back after; several at once add up. No pool (SQLite, a task cluster's workers): nothing to do.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.db import connection

_lock = threading.Lock()
_reserved = 0  # connections reserved by the blocks running now
_base_max = 0  # the pool's own maximum, before any room was made


@contextlib.contextmanager
def room_for(connections: int) -> Iterator[None]:
    """Let the control database's pool open ``connections`` more while the block runs."""
    pool = getattr(connection, "pool", None)
    if pool is None or connections <= 0:
        yield
        return
    _resize(pool, connections)
    try:
        yield
    finally:
        _resize(pool, -connections)


def _resize(pool, change: int) -> None:
    global _reserved, _base_max
    with _lock:
        if _reserved == 0:
            _base_max = pool.max_size
        _reserved += change
        pool.resize(pool.min_size, _base_max + _reserved)
