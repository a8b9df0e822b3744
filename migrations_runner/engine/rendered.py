"""SQL compositions rendered once and sent as text: what a lane sends for every target with the same pieces.

Composing identifiers and literals with ``psycopg.sql`` and rendering them for a connection costs tens of
microseconds each time; a lane sends the same history-row values (one per script of the execution) and the same
settings (one per schema) again and again. ``rendered`` keeps the rendered text per key and per quoting context
of the connection (its client encoding and ``standard_conforming_strings``, what a literal's writing may depend
on), so a text is only reused where rendering the composition for the connection gives it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable

import psycopg
from psycopg import sql

RENDERED_MAX = 4096  # texts kept; when full, the oldest half goes

_texts: dict[tuple[Hashable, ...], str] = {}
_lock = threading.Lock()


def quoting_context(conn: psycopg.Connection) -> tuple[str, bytes | None]:
    """What decides how a composition is written for ``conn``: its client encoding and whether backslashes in
    string literals are plain characters."""
    return conn.info.encoding, conn.pgconn.parameter_status(b"standard_conforming_strings")


def rendered_text(conn: psycopg.Connection, key: tuple[Hashable, ...], make: Callable[[], sql.Composable]) -> str:
    """The text of ``make()`` rendered for ``conn``, made once per ``key`` (which must identify everything
    ``make`` composes) and quoting context."""
    full = (*quoting_context(conn), *key)
    text = _texts.get(full)
    if text is None:
        text = make().as_string(conn)
        with _lock:
            if len(_texts) >= RENDERED_MAX:
                for old in list(_texts)[: RENDERED_MAX // 2]:
                    del _texts[old]
            _texts[full] = text
    return text


def rendered(conn: psycopg.Connection, key: tuple[Hashable, ...], make: Callable[[], sql.Composable]) -> sql.SQL:
    """``rendered_text`` as a composable, to join with other SQL."""
    return sql.SQL(rendered_text(conn, key, make))
