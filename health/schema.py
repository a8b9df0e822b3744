"""How the /metrics token appears in the OpenAPI schema (a drf-spectacular extension)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class MetricsTokenScheme(OpenApiAuthenticationExtension):
    target_class = "health.api.MetricsTokenAuthentication"
    name = "metricsToken"

    def get_security_definition(self, auto_schema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "The METRICS_TOKEN setting."}
