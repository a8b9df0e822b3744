"""REST endpoints under ``/api/v1/migrations/``: execute, list, status, targets, cancel, rollback, plans, sets,
adopting Flyway history and baselines."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from connections import selectors as registry
from connections.serializers import TenantSerializer
from infra_site import roles
from infra_site.errors import ValidationFailed
from infra_site.pagination import KeysetPagination, LimitOffsetPagination
from infra_site.permissions import require_roles
from migrations_runner import selectors, services
from migrations_runner.models import ExecutionStatus, MigrationExecution, Origin, Scope, TargetRun
from migrations_runner.options import ExecutionOptions
from migrations_runner.selection import TargetSelection
from migrations_runner.serializers import (
    AdoptionReportSerializer,
    AdoptSerializer,
    BaselineReportSerializer,
    BaselineSerializer,
    ExecuteSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    FingerprintReportSerializer,
    FingerprintScanSerializer,
    FleetStatusSerializer,
    MigrationsHealthSerializer,
    PlanRequestSerializer,
    PlanSerializer,
    ProvisionResultSerializer,
    ProvisionSerializer,
    RollbackSerializer,
    ScheduleSerializer,
    ScopeSerializer,
    SetsSerializer,
    TargetPlanSerializer,
    TargetRunSerializer,
    json_texts,
    with_progress,
)

READ = require_roles(read=roles.MIGRATIONS_READ)
EXECUTE = require_roles(read=roles.MIGRATIONS_READ, write=roles.MIGRATIONS_EXECUTE)
MANAGE = require_roles(read=roles.MIGRATIONS_READ, write=roles.MIGRATIONS_MANAGE)


def _actor(request: Request) -> str:
    return request.user.get_username()


class ExecuteView(APIView):
    """Start an execution (or a dry run) over a scope; answers 202 with the execution."""

    permission_classes = [EXECUTE]

    @extend_schema(request=ExecuteSerializer, responses={202: ExecutionDetailSerializer})
    def post(self, request: Request) -> Response:
        params = ExecuteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        execution = services.execution_start(
            selection=data["selection"], options=data["options"], actor=_actor(request), origin=Origin.API
        )
        return Response(
            ExecutionDetailSerializer(execution, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class ExecutionListView(generics.ListAPIView):
    """Recent executions, newest first; ``?status=`` filters, ``limit`` is 1..100."""

    permission_classes = [READ]
    serializer_class = ExecutionSerializer
    pagination_class = LimitOffsetPagination
    count_known: int | None = None

    @extend_schema(parameters=[OpenApiParameter("status", enum=ExecutionStatus.values)])
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def list(self, request: Request, *args, **kwargs):
        executions = self.filter_queryset(self.get_queryset())
        rendered = request.accepted_renderer.format == "json" and selectors.rows_rendered_here()
        if not request.query_params.get("status"):
            self.count_known = selectors.executions_count()  # kept by a PostgreSQL control database
        if rendered:  # the page's keys, then its executions, the finished ones rendered by the control database
            keys = self.paginate_queryset(executions.values_list("pk", flat=True)) or []
            page = selectors.executions_rendered(pks=list(keys))
        else:
            page = self.paginate_queryset(executions) or []
        # A finished execution runs nothing (it finishes only once no run of it runs): a page of finished ones,
        # the usual list, reads no runs at all.
        unfinished = [e.pk for e in page if isinstance(e, MigrationExecution) and not e.is_finished]
        context = {
            **self.get_serializer_context(),
            "running": selectors.executions_running(execution_ids=unfinished) if unfinished else {},
        }
        if not rendered:
            return self.get_paginated_response(ExecutionSerializer(page, many=True, context=context).data)
        # Finished ones rendered; the others (their progress reads runs, their error is redacted per caller) go
        # through the serializer.
        paginator = self.paginator
        assert isinstance(paginator, LimitOffsetPagination)
        return paginator.get_rendered_response(json_texts(page, _rendered_execution, ExecutionSerializer, context))

    def get_queryset(self):
        wanted = self.request.query_params.get("status")
        if wanted and wanted not in ExecutionStatus.values:
            raise ValidationFailed(
                f"'status' must be one of {', '.join(ExecutionStatus.values)}.", details={"status": wanted}
            )
        return selectors.execution_list(status=wanted)


class ExecutionStatusView(APIView):
    permission_classes = [READ]

    @extend_schema(responses=ExecutionDetailSerializer)
    def get(self, request: Request, execution_id) -> Response:
        return Response(
            ExecutionDetailSerializer(
                selectors.execution_get(execution_id=execution_id), context={"request": request}
            ).data
        )


class TargetRunPages(KeysetPagination):
    key_fields = ("phase", "id")
    row_fields = selectors.LISTED_ROW_FIELDS

    def rows_fetch(self, request):
        # Pages answered in JSON get their rows rendered by a PostgreSQL control database.
        if request.accepted_renderer.format == "json" and selectors.rows_rendered_here():
            return selectors.execution_target_rows_rendered
        return None


class ExecutionTargetsView(generics.ListAPIView):
    """The target runs of an execution in phase order; ``?status=`` filters. ``next``, ``previous`` and ``last``
    page by cursor (as fast at the end as at the start); ``?offset=`` still pages by offset."""

    permission_classes = [READ]
    serializer_class = TargetRunSerializer
    pagination_class = TargetRunPages
    count_known: int | None = None

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no execution id
            return TargetRun.objects.none()
        execution = selectors.execution_get(execution_id=self.kwargs["execution_id"], only=("targets_total",))
        qs = selectors.execution_target_rows(execution=execution)
        wanted = self.request.query_params.get("status")
        # Every run of an execution is made at its planning, which counts them: no count query for the whole list.
        self.count_known = None if wanted else execution.targets_total
        return qs.filter(status=wanted) if wanted else qs

    def list(self, request: Request, *args, **kwargs):
        paginator = self.paginator
        assert isinstance(paginator, TargetRunPages)
        if paginator.rows_fetch(request) is not None and paginator.offset_query_param not in request.query_params:
            # A page by cursor in JSON from a PostgreSQL control database: its count and rendered rows in one query.
            def read(cursor, limit):
                return selectors.execution_target_page_rendered(
                    execution_id=self.kwargs["execution_id"],
                    status=request.query_params.get("status") or None,
                    cursor=cursor,
                    limit=limit,
                )

            page = paginator.paginate_rows(request, read)
            return paginator.get_rendered_response(
                json_texts(page, _rendered_run, TargetRunSerializer, self.get_serializer_context())
            )
        rows = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert rows is not None
        if paginator.fetch is None:
            return self.get_paginated_response(self.get_serializer(rows, many=True).data)
        # Rendered by the database, but for runs with an error, which the serializer redacts per caller.
        rendered = json_texts(rows, _rendered_run, TargetRunSerializer, self.get_serializer_context())
        return paginator.get_rendered_response(rendered)


def _rendered_execution(execution) -> str | None:
    return with_progress(execution) if isinstance(execution, selectors.RenderedExecution) else None


def _rendered_run(row: dict) -> str | None:
    return row.get(selectors.RENDERED)


class CancelView(APIView):
    permission_classes = [EXECUTE]

    @extend_schema(request=None, responses={202: ExecutionSerializer})
    def post(self, request: Request, execution_id) -> Response:
        """Cancel an unfinished execution; 409 when it has already ended."""
        execution = services.execution_cancel(
            execution=selectors.execution_get(execution_id=execution_id), actor=_actor(request)
        )
        return Response(
            ExecutionSerializer(execution, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class ContinueView(APIView):
    """Approve the next canary wave of an execution that is awaiting approval; 409 when it is not waiting."""

    permission_classes = [EXECUTE]

    @extend_schema(request=None, responses={202: ExecutionDetailSerializer})
    def post(self, request: Request, execution_id) -> Response:
        execution = services.execution_continue(
            execution=selectors.execution_get(execution_id=execution_id), actor=_actor(request)
        )
        return Response(
            ExecutionDetailSerializer(execution, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class AbortView(APIView):
    """Stop an execution that is awaiting approval between two waves: the waves not started are cancelled."""

    permission_classes = [EXECUTE]

    @extend_schema(request=None, responses={200: ExecutionDetailSerializer})
    def post(self, request: Request, execution_id) -> Response:
        execution = services.execution_abort(
            execution=selectors.execution_get(execution_id=execution_id), actor=_actor(request)
        )
        return Response(ExecutionDetailSerializer(execution, context={"request": request}).data)


class RetryView(APIView):
    """Start a new execution over just the failed targets of this one."""

    permission_classes = [EXECUTE]

    @extend_schema(request=None, responses={202: ExecutionDetailSerializer})
    def post(self, request: Request, execution_id) -> Response:
        original = selectors.execution_get(execution_id=execution_id)
        retry = services.execution_retry(execution=original, actor=_actor(request), origin=Origin.API)
        return Response(
            ExecutionDetailSerializer(retry, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class RollbackView(APIView):
    permission_classes = [EXECUTE]

    @extend_schema(
        request=RollbackSerializer,
        responses={202: ExecutionDetailSerializer, 404: OpenApiResponse(description="No execution with this id.")},
    )
    def post(self, request: Request) -> Response:
        params = RollbackSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        original = selectors.execution_get(execution_id=params.validated_data["execution_id"])
        rollback = services.execution_rollback(execution=original, actor=_actor(request), origin=Origin.API)
        return Response(
            ExecutionDetailSerializer(rollback, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class PlanView(APIView):
    """What a run would do, per target, without recording or changing anything."""

    permission_classes = [READ]

    @extend_schema(request=PlanRequestSerializer, responses=PlanSerializer)
    def post(self, request: Request) -> Response:
        params = PlanRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        plans = selectors.plan(data["selection"], out_of_order=data["options"].out_of_order)
        lint = selectors.plan_lint(plans)
        return Response(
            {
                "targets": TargetPlanSerializer(plans, many=True, context={"request": request}).data,
                "count": len(plans),
                "lint": lint,
                "lint_blocked": bool(selectors.lint_blocking(lint)),
            }
        )


class FleetStatusView(APIView):
    """Every target's current version, pending versions and drift."""

    permission_classes = [READ]

    @extend_schema(
        parameters=[OpenApiParameter("region", many=True), OpenApiParameter("connection", many=True)],
        responses=FleetStatusSerializer,
    )
    def get(self, request: Request) -> Response:
        query = request.query_params
        plans = selectors.fleet_status_live(
            TargetSelection(regions=query.getlist("region"), connections=query.getlist("connection"))
        )
        return Response(
            {
                "targets": TargetPlanSerializer(plans, many=True, context={"request": request}).data,
                "count": len(plans),
                "behind": sum(1 for plan in plans if plan.pending),
                "drifted": sum(1 for plan in plans if plan.drift),
                "unreachable": sum(1 for plan in plans if plan.error),
            }
        )


class SetsView(APIView):
    """The loaded migration sets: versions, checksums, undo availability and validation problems."""

    permission_classes = [READ]

    @extend_schema(responses=SetsSerializer)
    def get(self, request: Request) -> Response:
        sets = selectors.sets_load(strict=False)
        return Response(
            {
                "sets": [
                    {**mset.snapshot(), "latest": str(mset.latest) if mset.latest else None, "problems": mset.problems}
                    for mset in sets.values()
                ]
            }
        )


class MigrationsHealthView(APIView):
    """Whether the migration system can work: sets valid, dependencies sane, executions not stuck."""

    permission_classes = [READ]

    @extend_schema(responses={200: MigrationsHealthSerializer, 503: MigrationsHealthSerializer})
    def get(self, request: Request) -> Response:
        report = selectors.migrations_health()
        return Response(report, status=status.HTTP_200_OK if report["status"] == "healthy" else 503)


class ScheduleViewSet(viewsets.ModelViewSet):
    """Migration schedules (cron or one-off), kept in sync with the task queue's scheduler."""

    serializer_class = ScheduleSerializer
    permission_classes = [require_roles(read=roles.MIGRATIONS_READ, write=roles.MIGRATIONS_MANAGE)]
    pagination_class = LimitOffsetPagination

    def get_queryset(self):
        return selectors.schedule_list()

    def get_object(self):
        return selectors.schedule_get(schedule_id=self.kwargs["pk"])

    def perform_create(self, serializer) -> None:
        serializer.instance = services.schedule_create(actor=_actor(self.request), **serializer.validated_data)

    def perform_update(self, serializer) -> None:
        serializer.instance = services.schedule_update(
            schedule=serializer.instance, actor=_actor(self.request), **serializer.validated_data
        )

    def perform_destroy(self, instance) -> None:
        services.schedule_delete(schedule=instance, actor=_actor(self.request))


class ProvisionView(APIView):
    """Create a tenant, its schema, and run the tenant set on it; 201 when active, 400 with the error otherwise."""

    # Provisioning registers a tenant and runs migrations on it: it needs both roles.
    permission_classes = [
        require_roles(read=roles.DATABASES_READ, write=(roles.DATABASES_MANAGE, roles.MIGRATIONS_EXECUTE))
    ]

    @extend_schema(
        request=ProvisionSerializer,
        responses={201: ProvisionResultSerializer, 404: OpenApiResponse(description="No connection with this name.")},
    )
    def post(self, request: Request) -> Response:
        params = ProvisionSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        connection = registry.connection_get_by_name(name=data.pop("connection"))
        tenant, execution = services.tenant_provision(
            connection=connection, actor=_actor(request), origin=Origin.API, wait=True, **data
        )
        body = {
            "tenant": TenantSerializer(tenant).data,
            "execution": ExecutionSerializer(execution, context={"request": request}).data,
        }
        if tenant.status != "active":
            return Response(
                {
                    "error": "provisioning_failed",
                    "message": f"Provisioning {tenant.slug} failed: {tenant.error}",
                    "details": body,
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(body, status=status.HTTP_201_CREATED)


class TenantMigrateView(APIView):
    """Migrate one tenant now (an execution of scope single); 202."""

    permission_classes = [EXECUTE]

    @extend_schema(request=None, responses={202: ExecutionDetailSerializer})
    def post(self, request: Request, slug: str) -> Response:
        tenant = registry.tenant_get(slug=slug)
        execution = services.execution_start(
            selection=TargetSelection(scope=Scope.SINGLE, tenants=[tenant.slug]),
            options=ExecutionOptions(),
            actor=_actor(request),
            origin=Origin.API,
        )
        return Response(
            ExecutionDetailSerializer(execution, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class AdoptView(APIView):
    """Adopt Flyway-managed targets: import each selected target's flyway_schema_history into infra_schema_history,
    so the next run applies only what Flyway had not. A target with drift is refused (its report says why) unless
    ``accept_drift``; ``dry_run`` previews. Answers 200 with a report per target."""

    permission_classes = [MANAGE]

    @extend_schema(
        request=AdoptSerializer,
        responses={
            200: AdoptionReportSerializer,
            400: OpenApiResponse(
                description="Invalid input (details name the fields), no target matches, or the sets are invalid."
            ),
            404: OpenApiResponse(description="A tenant or connection named in the selection does not exist."),
        },
    )
    def post(self, request: Request) -> Response:
        params = AdoptSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(services.flyway_adopt(actor=_actor(request), **params.validated_data))


class BaselineView(APIView):
    """Mark a target migrated by hand (a tenant's schema, or a connection's default schema) as being at a version,
    without running anything: runs then apply only the versions above it."""

    permission_classes = [MANAGE]

    @extend_schema(
        request=BaselineSerializer,
        responses={
            200: BaselineReportSerializer,
            400: OpenApiResponse(
                description="Invalid input (details name the fields: version, tenant or connection), or the target "
                "could not be read."
            ),
            404: OpenApiResponse(description="No tenant or connection with this name."),
            409: OpenApiResponse(
                description="The target already has history at or above the version, its schema does not exist, "
                "or its history shows versions up to it undone (without force); nothing was written."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        params = BaselineSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        selection = services.baseline_selection(tenant=data.get("tenant"), connection=data.get("connection"))
        report = services.target_baseline(
            selection=selection,
            version=data["version"],
            actor=_actor(request),
            dry_run=data["dry_run"],
            force=data["force"],
            reason=data["reason"],
        )
        return Response(report)


class FingerprintsView(APIView):
    """The recorded schema fingerprints: each (set, version)'s majority fingerprint over the whole fleet, and the
    selected targets that differ from it (outliers), each with its diff. Reads only the control database."""

    permission_classes = [READ]

    @extend_schema(
        parameters=[
            OpenApiParameter("region", many=True, description="Narrow the outliers listed to these regions."),
            OpenApiParameter("connection", many=True, description="Narrow the outliers listed to these databases."),
            OpenApiParameter("tenant", many=True, description="Narrow the outliers listed to these tenants."),
        ],
        responses=FingerprintReportSerializer,
    )
    def get(self, request: Request) -> Response:
        query = request.query_params
        selection = TargetSelection(
            regions=query.getlist("region"), connections=query.getlist("connection"), tenants=query.getlist("tenant")
        )
        report = selectors.fingerprint_report(selection)
        return Response(FingerprintReportSerializer(report.as_dict(), context={"request": request}).data)


class FingerprintScanView(APIView):
    """Start a fingerprint scan of the selected targets in the background (POST, 202), or show the latest scan and
    its progress (GET).

    A scan reads every selected database (read-only sessions, at most ``MIGRATION_MAX_PER_DATABASE`` per server)
    and changes nothing on them; as it loads the fleet, starting one needs ``migrations:execute`` and one runs at a
    time. ``GET migrations/fingerprints/`` reports what it recorded.
    """

    permission_classes = [EXECUTE]

    @extend_schema(responses={200: FingerprintScanSerializer, 404: OpenApiResponse(description="No scan yet.")})
    def get(self, request: Request) -> Response:
        scan = selectors.fingerprint_scan_latest()
        return Response(FingerprintScanSerializer(scan, context={"request": request}).data)

    @extend_schema(
        request=ScopeSerializer,
        responses={
            202: FingerprintScanSerializer,
            400: OpenApiResponse(description="Invalid input, or no target matches the selection."),
            409: OpenApiResponse(description="A scan is running (details name it); nothing was started."),
        },
    )
    def post(self, request: Request) -> Response:
        params = ScopeSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        scan = services.fingerprint_scan_start(selection=params.validated_data["selection"], started_by=_actor(request))
        return Response(
            FingerprintScanSerializer(scan, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )


class FingerprintScanDetailView(APIView):
    """One fingerprint scan and its progress."""

    permission_classes = [READ]

    @extend_schema(responses=FingerprintScanSerializer)
    def get(self, request: Request, scan_id) -> Response:
        scan = selectors.fingerprint_scan_get(scan_id=scan_id)
        return Response(FingerprintScanSerializer(scan, context={"request": request}).data)
