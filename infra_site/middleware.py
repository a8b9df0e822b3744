"""Middleware of the project: API paths with or without their trailing slash, and oversized bodies refused."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

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
