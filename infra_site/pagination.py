"""Pagination of list endpoints: ``limit`` (1..100, default 50) and ``offset``, or a ``cursor`` where the list
pages by key; bad values are a 400."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpResponse
from rest_framework import pagination
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from infra_site.errors import ValidationFailed
from infra_site.keyset import (
    LAST_PAGE,
    Cursor,
    KeysetPage,
    RowFetch,
    cursor_param,
    keyset_page,
    page_of_rows,
    rows_of_keys,
)


def _bounded_int(request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValidationFailed(f"'{name}' must be an integer {bounds}.", details={name: raw})
    return value


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """``count`` is the view's ``count_known`` when it has one (no count query), else counted."""

    default_limit = 50
    max_limit = 100
    known_count: int | None = None

    def paginate_queryset(self, queryset, request, view=None):
        self.known_count = getattr(view, "count_known", None)
        return super().paginate_queryset(queryset, request, view)

    def get_count(self, queryset) -> int:
        return self.known_count if self.known_count is not None else super().get_count(queryset)

    def get_limit(self, request) -> int:
        return _bounded_int(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request) -> int:
        return _bounded_int(request, self.offset_query_param, 0, 0, None)

    def _body(self, results: list) -> dict:
        return {
            "count": self.count,
            "next": self.get_next_link(),
            "previous": self.get_previous_link(),
            "results": results,
        }

    def get_paginated_response(self, data):
        return Response(self._body(data))

    def get_rendered_response(self, results: list[str]) -> HttpResponse:
        """The page's response when each of its results is already JSON text: what ``get_paginated_response``
        answers with JSONRenderer, without parsing or encoding the results again."""
        envelope = JSONRenderer().render(self._body([]))
        assert envelope.endswith(b"[]}")
        body = b"".join((envelope[:-2], ",".join(results).encode(), b"]}"))
        return HttpResponse(body, content_type=JSONRenderer.media_type)


class KeysetPagination(LimitOffsetPagination):
    """Pages by key: ``next``, ``previous`` and ``last`` are ``?cursor=`` links, and any page costs two index
    range reads, however deep. ``?offset=`` still pages by offset (with offset links), as before, reading the
    page's keys by offset and then its rows; ``count`` is in both (the view's ``count_known`` when it has one,
    else counted). The view's queryset must be unique on ``key_fields`` (integers), in that order."""

    cursor_query_param = "cursor"
    key_fields: tuple[str, str]
    row_fields: tuple[str, ...] = ()  # when set, a page's rows are dicts of these fields (``values()``)
    page: KeysetPage | None = None
    fetch: RowFetch | None = None

    def paginate_queryset(self, queryset, request, view=None):
        self.known_count = getattr(view, "count_known", None)
        offset = self.offset_query_param in request.query_params
        if offset and self.cursor_query_param in request.query_params:
            raise ValidationFailed(
                f"Page by '{self.cursor_query_param}' or by '{self.offset_query_param}', not both.",
                details={
                    name: request.query_params[name] for name in (self.cursor_query_param, self.offset_query_param)
                },
            )
        if offset:
            # The keys of the page first (an index's entries skipped, not every joined row sorted), then its rows.
            keys: list | None = super().paginate_queryset(queryset.values_list("pk", flat=True), request, view)
            self.fetch = self.rows_fetch(request)
            return rows_of_keys(queryset, list(keys or ()), self.row_fields, self.fetch)
        self.url = remove_query_param(request.build_absolute_uri(), self.offset_query_param)
        self.limit = self.get_limit(request)
        cursor = cursor_param(request, self.cursor_query_param)
        self.count = self.get_count(queryset)
        self.fetch = self.rows_fetch(request)
        self.page = keyset_page(queryset, self.key_fields, cursor, self.limit, self.row_fields, self.fetch)
        return self.page.rows

    def paginate_rows(self, request, read: Callable[[Cursor, int], tuple[list, int]]) -> list:
        """``paginate_queryset`` for a list that reads a page in one go: ``read(cursor, limit)`` gives up to
        ``limit`` rows on the cursor's side of its key, in key order, and the number of rows of the list.
        ``?offset=`` is for ``paginate_queryset``."""
        self.url = remove_query_param(request.build_absolute_uri(), self.offset_query_param)
        self.limit = self.get_limit(request)
        cursor = cursor_param(request, self.cursor_query_param)
        rows, self.count = read(cursor, self.limit + 1)
        self.page = page_of_rows(rows, self.key_fields, cursor, self.limit)
        return self.page.rows

    def rows_fetch(self, request) -> RowFetch | None:
        """What reads a page's rows from its keys, when not the queryset (rows of ``row_fields``) itself."""
        return None

    def _link(self, cursor: Cursor) -> str:
        return replace_query_param(self.url, self.cursor_query_param, cursor.encode())

    def get_next_link(self):
        if self.page is None:
            return super().get_next_link()
        return self._link(self.page.next) if self.page.next else None

    def get_previous_link(self):
        if self.page is None:
            return super().get_previous_link()
        return self._link(self.page.previous) if self.page.previous else None

    def get_last_link(self) -> str | None:
        return None if self.page is None else self._link(LAST_PAGE)

    def _body(self, results: list) -> dict:
        return {
            "count": self.count,
            "next": self.get_next_link(),
            "previous": self.get_previous_link(),
            "last": self.get_last_link(),
            "results": results,
        }

    def get_paginated_response_schema(self, schema):
        response = super().get_paginated_response_schema(schema)
        response["properties"]["last"] = {
            "type": "string",
            "nullable": True,
            "format": "uri",
            "description": "The last page, by cursor (null when paging by offset).",
        }
        return response

    def get_schema_operation_parameters(self, view):
        return [
            *super().get_schema_operation_parameters(view),
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "A page by key, from the 'next', 'previous' or 'last' link; not with 'offset'.",
                "schema": {"type": "string"},
            },
        ]
