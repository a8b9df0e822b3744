"""URL configuration: the admin, the REST API under /api/v1/, and the API docs (not in production)."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCLogoutView

from infra_site import views
from infra_site.auth import schema  # noqa: F401 (registers the schema extensions: the schema is made from the URLs)
from infra_site.auth import views as auth_views

urlpatterns = [
    path("", views.home, name="home"),
    # Before the admin's own: its login page offers Keycloak, its logout also ends the Keycloak session.
    path("admin/login/", auth_views.admin_login, name="infra-admin-login"),
    path("admin/logout/", OIDCLogoutView.as_view(), name="infra-admin-logout"),
    path("admin/", admin.site.urls),
    path("oidc/authenticate/", auth_views.KeycloakLoginView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", OIDCAuthenticationCallbackView.as_view(), name="oidc_authentication_callback"),
    path("api/v1/auth/me/", auth_views.MeView.as_view(), name="auth-me"),
    path("api/v1/", include("migrations_runner.urls")),  # first: tenants/provision/ before tenants/<slug>/
    path("api/v1/", include("connections.urls")),
    path("", include("health.urls")),  # /health/... and /metrics
]

if settings.API_DOCS_ENABLED:
    from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

    urlpatterns += [
        path("api/v1/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
        path("api/v1/docs/", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="swagger-ui"),
    ]

handler404 = "infra_site.views.not_found"
handler500 = "infra_site.views.server_error"
