"""REST endpoints of the registry: ``/api/v1/databases/`` and ``/api/v1/tenants/``."""

from __future__ import annotations

import django_filters
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from connections import selectors, services
from connections.models import DatabaseConnection, DatabaseType, Tenant, TenantStatus
from connections.serializers import DatabaseConnectionSerializer, ProbeResultSerializer, TenantSerializer
from infra_site import roles
from infra_site.permissions import require_roles


def _actor(request: Request) -> str:
    return request.user.get_username()


class ConnectionFilter(django_filters.FilterSet):
    database_type = django_filters.ChoiceFilter(choices=DatabaseType.choices)
    # The seed's name for the same filter.
    connection_type = django_filters.ChoiceFilter(field_name="database_type", choices=DatabaseType.choices)
    region = django_filters.CharFilter()
    is_active = django_filters.BooleanFilter()
    is_healthy = django_filters.BooleanFilter()

    class Meta:
        model = DatabaseConnection
        fields = ["database_type", "connection_type", "region", "is_active", "is_healthy"]


# The password may come as a form field: an error report (DEBUG's page, a mailed 500) must not show it.
@method_decorator(sensitive_post_parameters("password"), name="dispatch")
class DatabaseConnectionViewSet(viewsets.ModelViewSet):
    """Registered databases of the fleet. Creating or changing connection details tests connectivity first."""

    serializer_class = DatabaseConnectionSerializer
    permission_classes = [require_roles(read=roles.DATABASES_READ, write=roles.DATABASES_MANAGE)]
    filterset_class = ConnectionFilter
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.connection_list()

    def get_object(self) -> DatabaseConnection:
        return selectors.connection_get(connection_id=self.kwargs["pk"])

    def perform_create(self, serializer) -> None:
        data = dict(serializer.validated_data)
        verify = data.pop("verify", True)
        serializer.instance = services.connection_create(actor=_actor(self.request), verify=verify, **data)

    def perform_update(self, serializer) -> None:
        data = dict(serializer.validated_data)
        verify = data.pop("verify", True)
        serializer.instance = services.connection_update(
            connection=serializer.instance, actor=_actor(self.request), verify=verify, **data
        )

    def perform_destroy(self, instance: DatabaseConnection) -> None:
        services.connection_delete(connection=instance, actor=_actor(self.request))

    @extend_schema(request=None, responses=ProbeResultSerializer)
    @action(detail=True, methods=["post"], url_path="test")
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Test connectivity now, store the health snapshot and return it."""
        connection = self.get_object()
        result = services.connection_test(connection=connection)
        body = ProbeResultSerializer(
            {
                "ok": result.ok,
                "response_time_ms": result.response_time_ms,
                "server_version": result.server_version,
                "cause": result.cause,
                "description": result.description,
                "error": connection.error,
            }
        ).data
        return Response(body, status=status.HTTP_200_OK)


class TenantViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Tenants of the SaaS and where their data lives."""

    serializer_class = TenantSerializer
    permission_classes = [require_roles(read=roles.DATABASES_READ, write=roles.DATABASES_MANAGE)]
    lookup_field = "slug"
    filterset_fields = {"status": ["exact"], "connection__name": ["exact"], "connection__region": ["exact"]}
    http_method_names = ["get", "post", "put", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.tenant_list()

    def get_object(self) -> Tenant:
        return selectors.tenant_get(slug=self.kwargs["slug"])

    def perform_create(self, serializer) -> None:
        data = dict(serializer.validated_data)
        serializer.instance = services.tenant_create(
            actor=_actor(self.request), status=data.pop("status", TenantStatus.ACTIVE), **data
        )

    def perform_update(self, serializer) -> None:
        data = dict(serializer.validated_data)
        data.pop("slug", None)
        serializer.instance = services.tenant_update(tenant=serializer.instance, actor=_actor(self.request), **data)
