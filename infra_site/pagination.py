"""Pagination of list endpoints: ``limit`` (1..100, default 50) and ``offset``; bad values are a 400."""

from rest_framework import pagination

from infra_site.errors import ValidationFailed


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
    default_limit = 50
    max_limit = 100

    def get_limit(self, request) -> int:
        return _bounded_int(request, self.limit_query_param, self.default_limit, 1, self.max_limit)

    def get_offset(self, request) -> int:
        return _bounded_int(request, self.offset_query_param, 0, 0, None)
