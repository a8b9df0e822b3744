"""The health endpoints (paths as the service guide gives them) and Prometheus' /metrics.

Each path also answers in its other form (with or without the trailing slash, ``/health`` for a load
balancer), without a redirect and without a second entry in the schema.
"""

from typing import cast

from django.urls import path
from rest_framework.views import APIView

import health.schema  # noqa: F401 (registers the schema extension: the API's schema is made from the URLs)
from health import api


def unlisted(view: type[APIView]):
    """The view for a second form of its path, left out of the OpenAPI schema."""
    subclass = cast(type[APIView], type(view.__name__, (view,), {"schema": None}))
    return subclass.as_view()


urlpatterns = [
    path("health/", api.LivenessView.as_view(), name="health"),
    path("health/detailed", api.DetailedHealthView.as_view(), name="health-detailed"),
    path("health/services/<str:name>", api.ServiceHealthView.as_view(), name="health-service"),
    path("health/metrics", api.MetricsSummaryView.as_view(), name="health-metrics"),
    path("metrics", api.PrometheusMetricsView.as_view(), name="metrics"),
    path("health", unlisted(api.LivenessView), name="health-alias"),
    path("health/detailed/", unlisted(api.DetailedHealthView), name="health-detailed-alias"),
    path("health/services/<str:name>/", unlisted(api.ServiceHealthView), name="health-service-alias"),
    path("health/metrics/", unlisted(api.MetricsSummaryView), name="health-metrics-alias"),
    path("metrics/", unlisted(api.PrometheusMetricsView), name="metrics-alias"),
]
