"""URL configuration: the admin, the REST API under /api/v1/, and the API docs (not in production)."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from infra_site import views

urlpatterns = [
    path("", views.home, name="home"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("connections.urls")),
    path("api/v1/", include("migrations_runner.urls")),
]

if settings.API_DOCS_ENABLED:
    from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

    urlpatterns += [
        path("api/v1/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
        path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="swagger-ui"),
    ]

handler404 = "infra_site.views.not_found"
handler500 = "infra_site.views.server_error"
