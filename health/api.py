"""Health endpoints: liveness, the detailed report, one service, JSON metrics, and Prometheus' ``/metrics``.

Anyone may call them (load balancers, monitors); callers holding ``databases:read`` (``infrastructure:admin``
implies it) also see addresses, users, server versions and errors. Registered connections are probed during
a request only for authenticated callers, once per ``HEALTH_LIVE_PROBE_INTERVAL`` each: everyone else gets the
periodic check's stored results, so a silent database holds no web worker for an anonymous caller.
Authentication is the API's (bearer, basic, session) except on liveness, which touches nothing, and on
``/metrics``, which takes ``METRICS_TOKEN``.
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from redis import RedisError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from health import probes, selectors, services
from health.exceptions import ControlDatabaseUnavailable, MetricsClosed
from health.prometheus import exposition
from health.serializers import (
    DetailedHealthSerializer,
    ErrorSerializer,
    LivenessSerializer,
    MetricsSerializer,
    ServiceHealthSerializer,
)
from infra_site import roles
from infra_site.version import __version__

logger = logging.getLogger(__name__)


class FailOpenThrottle(BaseThrottle):
    """A configured throttle whose store failing lets the request through.

    The rate-limit counters live in the shared cache (a table of the control database, or Redis): when it is
    down, the health endpoints must still answer, and say so.
    """

    def __init__(self, throttle: BaseThrottle) -> None:
        self.throttle = throttle

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return self.throttle.allow_request(request, view)
        except (DatabaseError, RedisError) as exc:
            logger.warning("health: rate limit store unavailable", extra={"error": str(exc)})
            return True

    def wait(self) -> float | None:
        return self.throttle.wait()


def may_see_details(request: Request) -> bool:
    """Tell whether the caller holds ``databases:read`` (``infrastructure:admin`` implies it).

    Without the control database nobody can be identified by session or password: such callers get the
    anonymous report.
    """
    try:
        return roles.has_role(request.user, roles.DATABASES_READ)
    except DatabaseError:
        return False


def may_probe_live(request: Request) -> bool:
    """Tell whether the connections are probed for this request: an authenticated caller whose claim of
    ``HEALTH_LIVE_PROBE_INTERVAL`` is free. Without the control database (or its cache) nobody is identified."""
    try:
        user_id = request.user.pk if request.user.is_authenticated else None
        return user_id is not None and services.live_probe_claim(user_id=user_id)
    except (DatabaseError, RedisError):
        return False


class HealthView(APIView):
    """Open to anyone; authenticated lazily, so that a report comes even while the control database is down."""

    permission_classes = [AllowAny]

    def perform_authentication(self, request: Request) -> None:
        """Authenticate on first use of ``request.user`` (the throttles, ``may_see_details``), not up front."""

    def get_throttles(self) -> list[BaseThrottle]:
        return [FailOpenThrottle(throttle) for throttle in super().get_throttles()]


class LivenessView(APIView):
    """The process serves: touches no database, authenticates nobody, always 200."""

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(responses=LivenessSerializer, auth=[], tags=["health"])
    def get(self, request: Request) -> Response:
        return Response(
            LivenessSerializer(
                {
                    "status": probes.Status.HEALTHY,
                    "timestamp": timezone.now(),
                    "version": __version__,
                    "environment": settings.ENVIRONMENT,
                }
            ).data
        )


class DetailedHealthView(HealthView):
    """Every service, checked now within ``HEALTH_CHECK_TIMEOUT`` (the connections as ``may_probe_live`` says);
    503 (error shape, report in ``details``) when the control database is unreachable, 200 otherwise
    (``degraded`` when any other service is not)."""

    @extend_schema(
        responses={200: DetailedHealthSerializer, 503: OpenApiResponse(ErrorSerializer, "Control database down.")},
        tags=["health"],
    )
    def get(self, request: Request) -> Response:
        report = probes.system_health(live_connections=may_probe_live(request))
        data = DetailedHealthSerializer(report.as_dict(private=may_see_details(request))).data
        if report.overall_status == probes.OverallStatus.UNHEALTHY:
            raise ControlDatabaseUnavailable(details=data)
        return Response(data)


class ServiceHealthView(HealthView):
    """One service's entry, checked now: a fixed name or ``connection:<name>`` (probed as ``may_probe_live`` says)."""

    @extend_schema(
        responses={
            200: ServiceHealthSerializer,
            404: OpenApiResponse(ErrorSerializer, "No such service."),
            503: OpenApiResponse(ErrorSerializer, "The control database, which knows the connections, is down."),
        },
        tags=["health"],
    )
    def get(self, request: Request, name: str) -> Response:
        live = not name.startswith(probes.CONNECTION_PREFIX) or may_probe_live(request)
        (service,) = probes.system_health(only=name, live_connections=live).services
        return Response(ServiceHealthSerializer(service.as_dict(private=may_see_details(request))).data)


class MetricsSummaryView(HealthView):
    """Executions, the last day's target runs, queue depth, connections and this process, as JSON."""

    @extend_schema(
        responses={200: MetricsSerializer, 503: OpenApiResponse(ErrorSerializer, "Control database down.")},
        tags=["health"],
    )
    def get(self, request: Request) -> Response:
        if not probes.control_database_check().is_healthy:
            raise ControlDatabaseUnavailable()
        try:
            figures = selectors.metrics_summary()
        except DatabaseError as exc:
            raise ControlDatabaseUnavailable() from exc
        return Response(MetricsSerializer(figures).data)


METRICS_SCOPE = "metrics"


class MetricsTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <METRICS_TOKEN>``, compared in constant time."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, str] | None:
        token = settings.METRICS_TOKEN
        parts = get_authorization_header(request).split()
        if not token or not parts or parts[0].lower() != b"bearer":
            return None
        if len(parts) != 2 or not hmac.compare_digest(parts[1], token.encode()):
            raise exceptions.AuthenticationFailed("Invalid metrics token.")
        return AnonymousUser(), METRICS_SCOPE

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="metrics"'


class HasMetricsAccess(BasePermission):
    """The token when ``METRICS_TOKEN`` is set; without it, open in development and testing only."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        if settings.METRICS_TOKEN:
            if request.auth != METRICS_SCOPE:
                raise exceptions.NotAuthenticated("Send Authorization: Bearer <METRICS_TOKEN>.")
            return True
        if settings.IS_DEPLOYED:
            raise MetricsClosed()
        return True


class IgnoreAccept(BaseContentNegotiation):
    """Errors are JSON, the metrics the exposition format, whatever the scraper's Accept header lists."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class PrometheusMetricsView(APIView):
    """Prometheus exposition (text format 0.0.4); see ``health.prometheus`` for what is measured where."""

    authentication_classes = [MetricsTokenAuthentication]
    permission_classes = [HasMetricsAccess]
    throttle_classes = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = IgnoreAccept

    @extend_schema(
        responses={
            (200, "text/plain"): OpenApiTypes.STR,
            401: OpenApiResponse(ErrorSerializer, "METRICS_TOKEN is set and the request does not carry it."),
            403: OpenApiResponse(ErrorSerializer, "METRICS_TOKEN is unset in staging or production."),
        },
        tags=["health"],
    )
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
