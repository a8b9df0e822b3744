"""Pages by key (keyset pagination): a cursor between two rows of a list ordered by two integer keys, and the
page on its side, read from index ranges, as fast deep in the list as at its start.

Used by the selectors, the admin and the API's pagination (``infra_site.pagination``); nothing here knows of
the API framework, so a management command does not load it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from infra_site.errors import ValidationFailed

MAX_KEY = 2**63 - 1  # a bigint: a larger key would fail in the database, not here


@dataclass(frozen=True)
class Cursor:
    """A position between two rows of a list ordered by ``(major, minor)``: the page starts after ``key`` (or at
    the start), or ends before it (or at the end, ``key`` None)."""

    forward: bool
    key: tuple[int, int] | None

    def encode(self) -> str:
        raw = ("a" if self.forward else "b") + ("" if self.key is None else f":{self.key[0]}:{self.key[1]}")
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, encoded: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("ascii")
            direction, *key = raw.split(":")
            if direction not in ("a", "b") or len(key) not in (0, 2):
                raise ValueError(raw)
            if not all(part.isdigit() for part in key):
                raise ValueError(raw)
            numbers = tuple(int(part) for part in key)
            if any(n > MAX_KEY for n in numbers):
                raise ValueError(raw)
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise ValidationFailed(
                "'cursor' is not a cursor of this list: follow the 'next', 'previous' or 'last' links.",
                details={"cursor": encoded},
            ) from None
        return cls(forward=direction == "a", key=(numbers[0], numbers[1]) if numbers else None)


# Reads the rows of a page's keys: ``fetch(queryset, pks)``, rows in any order, each with its key fields and pk.
RowFetch = Callable[[QuerySet, list], Iterable[Any]]


def keyset_rows(
    queryset: QuerySet,
    fields: tuple[str, str],
    cursor: Cursor,
    limit: int,
    values: tuple[str, ...] = (),
    fetch: RowFetch | None = None,
) -> list:
    """Up to ``limit`` rows of ``queryset`` on the ``cursor`` side of its key, in ``(major, minor)`` order.

    The keys come first, from two range reads at most (the rest of the key's major value, then the following
    ones) rather than one ``(major, minor) > (a, b)`` condition: each is a plain range of an index
    ``(..., major, minor)`` on every database, so a page deep in the list costs what the first one does. They
    read no joined table, so that even a plan made on stale statistics (a freshly planned execution) sorts
    narrow keys and not every joined row; then the page's rows, with their joins, by primary key: model
    instances, dicts of the ``values`` fields when given, or what ``fetch`` reads of those keys."""
    major, minor = fields
    op = "gt" if cursor.forward else "lt"
    order = (major, minor) if cursor.forward else (f"-{major}", f"-{minor}")
    keys = queryset.order_by(*order).values_list("pk", flat=True)
    pks: list = []
    rest = keys
    if cursor.key is not None:
        pks = list(keys.filter(**{major: cursor.key[0], f"{minor}__{op}": cursor.key[1]})[:limit])
        rest = keys.filter(**{f"{major}__{op}": cursor.key[0]})
    if len(pks) < limit:
        pks += list(rest[: limit - len(pks)])
    if not cursor.forward:
        pks.reverse()
    return rows_of_keys(queryset, pks, values, fetch)


def rows_of_keys(queryset: QuerySet, pks: list, values: tuple[str, ...] = (), fetch: RowFetch | None = None) -> list:
    """The rows of ``queryset`` with the primary keys ``pks``, in that order, read by primary key (with their
    joins): model instances, dicts of the ``values`` fields when given, or what ``fetch`` reads of those keys."""
    if not pks:
        return []
    pk_name = queryset.model._meta.pk.attname
    if fetch is not None:
        page: Iterable[Any] = fetch(queryset, pks)
    else:
        page = queryset.filter(pk__in=pks)
        if values:
            page = page.values(*dict.fromkeys((pk_name, *values)))
    by_pk = {row_value(row, pk_name): row for row in page}
    return [by_pk[pk] for pk in pks if pk in by_pk]


def row_value(row: Any, name: str) -> Any:
    """A field of a listed row: a model instance, or a dict of a ``values()`` queryset."""
    return row[name] if isinstance(row, dict) else getattr(row, name)


@dataclass(frozen=True)
class KeysetPage:
    rows: list
    next: Cursor | None  # None: no page after this one
    previous: Cursor | None


def keyset_page(
    queryset: QuerySet,
    fields: tuple[str, str],
    cursor: Cursor,
    limit: int,
    values: tuple[str, ...] = (),
    fetch: RowFetch | None = None,
) -> KeysetPage:
    """The page of ``limit`` rows on the ``cursor`` side of its key, and the cursors of its neighbours."""
    return page_of_rows(keyset_rows(queryset, fields, cursor, limit + 1, values, fetch), fields, cursor, limit)


def page_of_rows(rows: list, fields: tuple[str, str], cursor: Cursor, limit: int) -> KeysetPage:
    """The page of ``limit`` rows on the ``cursor`` side of its key, and the cursors of its neighbours, from up to
    ``limit + 1`` rows read there in ``(major, minor)`` order (as ``keyset_rows`` reads them)."""
    more = len(rows) > limit
    if more:
        rows = rows[:limit] if cursor.forward else rows[1:]
    # A page reached by a cursor has rows on the side it came from: no query to prove it.
    came_back = cursor.key is not None and bool(rows)
    has_next, has_previous = (more, came_back) if cursor.forward else (came_back, more)
    major, minor = fields
    return KeysetPage(
        rows=rows,
        next=Cursor(True, (row_value(rows[-1], major), row_value(rows[-1], minor))) if has_next else None,
        previous=Cursor(False, (row_value(rows[0], major), row_value(rows[0], minor))) if has_previous else None,
    )


FIRST_PAGE = Cursor(forward=True, key=None)
LAST_PAGE = Cursor(forward=False, key=None)


def cursor_param(request, name: str = "cursor") -> Cursor:
    """The cursor a request names (``?cursor=``), or the first page."""
    raw = request.GET.get(name)
    return Cursor.decode(raw) if raw else FIRST_PAGE
