from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import DefaultRouter

from migrations_runner import api

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("schedules", api.ScheduleViewSet, basename="schedule")

urlpatterns: list[URLPattern | URLResolver] = [
    path("tenants/provision/", api.ProvisionView.as_view(), name="tenants-provision"),
    path("tenants/<str:slug>/migrate/", api.TenantMigrateView.as_view(), name="tenants-migrate"),
    path("migrations/<uuid:execution_id>/retry/", api.RetryView.as_view(), name="migrations-retry"),
    path("migrations/", api.ExecutionListView.as_view(), name="migrations-list"),
    path("migrations/execute/", api.ExecuteView.as_view(), name="migrations-execute"),
    path("migrations/rollback/", api.RollbackView.as_view(), name="migrations-rollback"),
    path("migrations/adopt/", api.AdoptView.as_view(), name="migrations-adopt"),
    path("migrations/baseline/", api.BaselineView.as_view(), name="migrations-baseline"),
    path("migrations/health/", api.MigrationsHealthView.as_view(), name="migrations-health"),
    path("migrations/sets/", api.SetsView.as_view(), name="migrations-sets"),
    path("migrations/dynamic/plan/", api.PlanView.as_view(), name="migrations-plan"),
    path("migrations/dynamic/status/", api.FleetStatusView.as_view(), name="migrations-fleet-status"),
    path("migrations/fingerprints/", api.FingerprintsView.as_view(), name="migrations-fingerprints"),
    path("migrations/fingerprints/scan/", api.FingerprintScanView.as_view(), name="migrations-fingerprints-scan"),
    path(
        "migrations/fingerprints/scans/<uuid:scan_id>/",
        api.FingerprintScanDetailView.as_view(),
        name="migrations-fingerprints-scan-detail",
    ),
    path("migrations/status/<uuid:execution_id>/", api.ExecutionStatusView.as_view(), name="migrations-status"),
    path("migrations/<uuid:execution_id>/targets/", api.ExecutionTargetsView.as_view(), name="migrations-targets"),
    path("migrations/<uuid:execution_id>/cancel/", api.CancelView.as_view(), name="migrations-cancel"),
    path("migrations/<uuid:execution_id>/continue/", api.ContinueView.as_view(), name="migrations-continue"),
    path("migrations/<uuid:execution_id>/abort/", api.AbortView.as_view(), name="migrations-abort"),
]
urlpatterns += router.urls
