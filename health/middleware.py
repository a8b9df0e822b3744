"""Counts and times every HTTP response for ``/metrics`` (per process; see ``health.prometheus``)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from health.prometheus import HTTP_DURATION, HTTP_REQUESTS

# Requests that matched no URL share one label, and unusual methods another, so scanners cannot grow the
# label sets.
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def view_label(request: HttpRequest) -> str:
    """The URL name of the view (``admin:index``, ``health-detailed``), else its route pattern."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    return match.view_name or match.route or UNMATCHED


class RequestMetricsMiddleware:
    """Count each response by view, method and status code, and time it by view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        view = view_label(request)
        method = request.method if request.method in METHODS else "other"
        HTTP_REQUESTS.labels(view=view, method=method, status=str(response.status_code)).inc()
        HTTP_DURATION.labels(view=view).observe(time.perf_counter() - started)
        return response
