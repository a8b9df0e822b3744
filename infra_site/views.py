"""Project-level views: the home redirect and JSON error pages for API paths."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views import defaults


def home(request: HttpRequest) -> HttpResponse:
    return redirect("admin:index")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/health/"))


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"error": "not_found", "message": f"No endpoint at {request.path}.", "details": {}}, status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"error": "internal_error", "message": "An unexpected error occurred; it has been logged.", "details": {}},
            status=500,
        )
    return defaults.server_error(request)
