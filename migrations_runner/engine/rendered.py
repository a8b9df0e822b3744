"""SQL compositions rendered once and sent as text: what a lane sends for every target with the same pieces.

Composing identifiers and literals with ``psycopg.sql`` and rendering them for a connection costs tens of
microseconds each time; a lane sends the same history-row values (one per script of the execution) and the same
settings (one per schema) again and again. ``rendered`` keeps the rendered text per key and per quoting context
of the connection (its client encoding and ``standard_conforming_strings``, what a literal's writing may depend
on), so a text is only reused where rendering the composition for the connection gives it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import psycopg
from psycopg import sql

RENDERED_MAX = 4096  # texts kept; when full, the oldest half goes

_texts: dict[tuple[Hashable, ...], str | SchemaTexts] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class SchemaTexts:
    """A schema's name as the statements of its target write it, rendered for a connection: a fleet's lane sends
    each schema's few statements once (one script), so what they name is rendered once for all of them, and
    they are joined as text."""

    identifier: str  # "tenant_a"
    literal: str  # 'tenant_a'
    search_path: str  # '"tenant_a", public'


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
        _keep(full, text)
    assert isinstance(text, str)
    return text


# A name of these characters is written alike for every connection: quoted as an identifier and as a literal it
# needs no escape (no quote, no backslash), and ASCII is the same bytes in every client encoding PostgreSQL has.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_$]+")


def schema_texts(conn: psycopg.Connection, schema: str) -> SchemaTexts:
    """``schema``'s identifier, literal and ``search_path`` value (itself, then ``public``) rendered for ``conn``,
    once per schema and quoting context (once per schema for a plain name: ``_PLAIN_NAME``, every tenant's)."""
    full = ("schema", schema) if _PLAIN_NAME.fullmatch(schema) else (*quoting_context(conn), "schema", schema)
    texts = _texts.get(full)
    if texts is None:
        identifier = sql.Identifier(schema).as_string(conn)
        literal, path = (sql.Literal(value).as_string(conn) for value in (schema, f"{identifier}, public"))
        texts = SchemaTexts(identifier, literal, path)
        _keep(full, texts)
    assert isinstance(texts, SchemaTexts)
    return texts


def _keep(key: tuple[Hashable, ...], value: str | SchemaTexts) -> None:
    with _lock:
        if len(_texts) >= RENDERED_MAX:
            for old in list(_texts)[: RENDERED_MAX // 2]:
                del _texts[old]
        _texts[key] = value


def rendered(conn: psycopg.Connection, key: tuple[Hashable, ...], make: Callable[[], sql.Composable]) -> sql.SQL:
    """``rendered_text`` as a composable, to join with other SQL."""
    return sql.SQL(rendered_text(conn, key, make))
