"""How the API's authentication classes appear in the OpenAPI schema (drf-spectacular extensions)."""

from drf_spectacular.authentication import BasicScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class KeycloakBearerScheme(OpenApiAuthenticationExtension):
    target_class = "infra_site.auth.authentication.KeycloakBearerAuthentication"
    name = "keycloakBearer"

    def get_security_definition(self, auto_schema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


class LockoutBasicScheme(BasicScheme):
    target_class = "infra_site.auth.authentication.LockoutBasicAuthentication"
    priority = 0
