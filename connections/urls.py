from rest_framework.routers import DefaultRouter

from connections.api import DatabaseConnectionViewSet, TenantViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("databases", DatabaseConnectionViewSet, basename="database")
router.register("tenants", TenantViewSet, basename="tenant")

urlpatterns = router.urls
