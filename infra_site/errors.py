"""One error base class and the API's exception handler.

Every API error has the JSON shape ``{"error", "message", "details"}``:
``error`` is a stable machine code, ``message`` a sentence for people, and
``details`` whatever structured context helps (field errors, the cause of a
connection failure, the missing role).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import Http404
from django.http.multipartparser import MultiPartParserError
from django.views.debug import SafeExceptionReporterFilter
from rest_framework import exceptions, status

if TYPE_CHECKING:
    from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """An error the product reports to its callers, with a code and an HTTP status."""

    code = "application_error"
    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class ValidationFailed(ApplicationError):
    code = "validation_error"
    status_code = status.HTTP_400_BAD_REQUEST


class NotFound(ApplicationError):
    code = "not_found"
    status_code = status.HTTP_404_NOT_FOUND


class Conflict(ApplicationError):
    code = "conflict"
    status_code = status.HTTP_409_CONFLICT


class RequestTooLarge(ApplicationError):
    """A request body above ``DATA_UPLOAD_MAX_MEMORY_SIZE``."""

    code = "request_too_large"
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE

    def __init__(self) -> None:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        super().__init__(f"The request body is larger than {limit} bytes.", details={"max_bytes": limit})


def _unreadable_body_error(exc: Exception) -> ApplicationError | None:
    """Return the error for a body Django refused to read (too large, too many fields, malformed), else None."""
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge()
    if isinstance(exc, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return ValidationFailed(
            f"The request has more than {limit} form fields.", code="too_many_fields", details={"max_fields": limit}
        )
    if isinstance(exc, MultiPartParserError):
        return ValidationFailed(f"Malformed request body: {exc}", code="parse_error")
    if isinstance(exc, SuspiciousOperation):
        # Django answers these with 400 outside the API too (number of files, malformed headers, ...).
        return ValidationFailed(str(exc), code="bad_request")
    return None


class SecretSafeReporterFilter(SafeExceptionReporterFilter):
    """What error reports (DEBUG's 500 page, mailed reports) show of a request and its frames.

    Django's filter stands aside while ``DEBUG`` is on; this one always hides the POST fields a view marks with
    ``sensitive_post_parameters`` and, in the frames' local dicts, the keys that name a secret (``password``).
    """

    def is_active(self, request: Any) -> bool:
        return True

    def cleanse_special_types(self, request: Any, value: Any) -> Any:
        value = super().cleanse_special_types(request, value)
        if isinstance(value, dict):
            return self.cleanse_setting("", value)
        return value


_DRF_CODES = {
    exceptions.NotAuthenticated: ("not_authenticated", "Authentication credentials were not provided."),
    exceptions.AuthenticationFailed: ("authentication_failed", "Authentication failed."),
    exceptions.PermissionDenied: ("permission_denied", "You do not have permission to do this."),
    exceptions.NotFound: ("not_found", "Not found."),
    exceptions.MethodNotAllowed: ("method_not_allowed", "Method not allowed."),
    exceptions.NotAcceptable: ("not_acceptable", "Not acceptable."),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", "Unsupported media type."),
    exceptions.ParseError: ("parse_error", "Malformed request body."),
    exceptions.Throttled: ("rate_limited", "Too many requests."),
    exceptions.ValidationError: ("validation_error", "Invalid input."),
}


def _drf_body(exc: exceptions.APIException) -> dict[str, Any]:
    code, message = next(
        (value for cls, value in _DRF_CODES.items() if isinstance(exc, cls)), ("error", "Request failed.")
    )
    detail = exc.detail
    details: Any = {}
    if isinstance(exc, exceptions.ValidationError):
        details = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        first = _first_message(details)
        if first:
            message = f"Invalid input: {first}"
    elif isinstance(detail, dict):
        message = str(detail.get("message", message))
        details = {k: v for k, v in detail.items() if k != "message"}
    elif detail:
        message = str(detail)
    if isinstance(exc, exceptions.Throttled):
        # djangorestframework-stubs leave out Throttled.wait, which its __init__ sets.
        wait = exc.wait  # type: ignore[attr-defined]
        if wait is not None:
            details = {"retry_after_seconds": int(wait)}
    return {"error": code, "message": message, "details": details}


def _first_message(details: Any, prefix: str = "") -> str:
    if isinstance(details, dict):
        for key, value in details.items():
            label = prefix if key == "non_field_errors" else (f"{prefix}.{key}" if prefix else str(key))
            found = _first_message(value, label)
            if found:
                return found
    elif isinstance(details, list):
        for value in details:
            found = _first_message(value, prefix)
            if found:
                return found
    elif details:
        return f"{prefix}: {details}" if prefix else str(details)
    return ""


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Render every error raised in an API view as ``{"error", "message", "details"}``."""
    # Imported here: a command loads this module for its errors and need not load the serializers (0.15 s).
    from rest_framework.response import Response

    exc = _unreadable_body_error(exc) or exc
    if isinstance(exc, ApplicationError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.APIException):
        headers = {}
        # DRF's views set auth_header on the exception; only Throttled has a wait.
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        wait = getattr(exc, "wait", None)
        if wait:
            headers["Retry-After"] = str(int(wait))
        return Response(_drf_body(exc), status=exc.status_code, headers=headers)
    view = context.get("view")
    logger.exception("unhandled error in API view", extra={"view": type(view).__name__ if view else None})
    return Response(
        {"error": "internal_error", "message": "An unexpected error occurred; it has been logged.", "details": {}},
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )
