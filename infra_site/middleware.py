"""Middleware of the project: API paths with or without their trailing slash, oversized bodies refused, and the
API's answers to reads compressed for the clients that accept it."""

from __future__ import annotations

import gzip
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.gzip import re_accepts_gzip
from django.utils.cache import patch_vary_headers

from infra_site.errors import RequestTooLarge


class ApiBodyLimitMiddleware:
    """Answer 413 with the API's error shape when an ``/api/`` request declares a body above the upload limit.

    Django enforces ``DATA_UPLOAD_MAX_MEMORY_SIZE`` only where it reads the body itself (``request.body``,
    forms); DRF's JSON parser reads the stream, so a 10 MB document would otherwise be parsed in full.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and request.path_info.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > limit:
                error = RequestTooLarge()
                return JsonResponse(error.as_dict(), status=error.status_code)
        return self.get_response(request)


class ApiTrailingSlashMiddleware:
    """Serve every ``/api/`` path with and without its trailing slash, without a redirect.

    The documented paths end with ``/``; clients written from the paths without it (``POST
    /api/v1/migrations/execute``) would otherwise get a redirect that drops their body. The path is completed
    before URL resolution, so the schema keeps one form of each path.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith("/api/") and not request.path_info.endswith("/"):
            request.path_info += "/"
            request.path += "/"
        return self.get_response(request)


class ApiGzipMiddleware:
    """Send the API's answers to ``GET`` and ``HEAD`` gzip-compressed to a client that accepts it.

    A page of 100 target runs is about 150 KB of JSON. At level 1 (about 0.7 ms of CPU for such a page) it
    becomes about 30 KB, less when its runs are alike: five times less or better to carry to a client across a
    network (on loopback it changes no latency). Only the answers to reads are compressed: they hold no secret
    next to text a caller chose (the BREACH attack), where a ``POST`` may answer with one (a new API token).
    Every answer to a read says ``Vary: Accept-Encoding``, compressed or not, so a cache keeps both forms apart.
    """

    MIN_BYTES = 1024  # smaller answers gain less than the headers and the work cost
    LEVEL = 1

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.method not in ("GET", "HEAD") or not request.path_info.startswith("/api/"):
            return response
        patch_vary_headers(response, ("Accept-Encoding",))
        if (
            response.streaming
            or response.has_header("Content-Encoding")
            or len(response.content) < self.MIN_BYTES
            or not re_accepts_gzip.search(request.META.get("HTTP_ACCEPT_ENCODING", ""))
        ):
            return response
        compressed = gzip.compress(response.content, compresslevel=self.LEVEL, mtime=0)
        if len(compressed) >= len(response.content):
            return response
        response.content = compressed
        response.headers["Content-Length"] = str(len(compressed))
        response.headers["Content-Encoding"] = "gzip"
        return response
