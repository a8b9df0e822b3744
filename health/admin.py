"""Admin of the health app: the connection snapshots (read-only), and the trend shown on a connection's page."""

from __future__ import annotations

from datetime import timedelta
from statistics import median

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from connections.models import DatabaseConnection
from health import selectors
from health.models import ConnectionSnapshot
from health.sparkline import Point, sparkline
from infra_site import roles
from infra_site.admin_mixins import RoleAdminMixin

TREND_HOURS = 24
FAILURES_SHOWN = 5


def connection_health_trend(connection: DatabaseConnection) -> SafeString:
    """The last day of a connection's periodic checks: a latency sparkline and the latest failures."""
    if connection.pk is None:
        return format_html("{}", "-")
    snapshots = selectors.connection_snapshots(connection=connection, hours=TREND_HOURS)
    if not snapshots:
        return format_html("{}", f"No periodic check in the last {TREND_HOURS} h.")
    end = timezone.now()
    latencies = [s.response_time_ms for s in snapshots if s.is_healthy and s.response_time_ms is not None]
    failed = [s for s in snapshots if not s.is_healthy]
    summary = f"{len(snapshots)} checks, {len(failed)} failed"
    if latencies:
        summary += f"; latency min {min(latencies):.1f} / median {median(latencies):.1f} / max {max(latencies):.1f} ms"
    points = [Point(s.checked_at, s.response_time_ms if s.is_healthy else None) for s in snapshots]
    # The SVG holds only numbers and the escaped summary (see health.sparkline).
    svg = mark_safe(sparkline(points, start=end - timedelta(hours=TREND_HOURS), end=end, title=summary))  # noqa: S308
    failures = format_html_join(
        "",
        "<li>{} {}: {}</li>",
        (
            (timezone.localtime(s.checked_at).strftime("%Y-%m-%d %H:%M:%S"), s.error_cause or "error", s.error)
            for s in reversed(failed[-FAILURES_SHOWN:])
        ),
    )
    return format_html(
        '<div class="health-trend">{}<div>{}</div>{}</div>',
        svg,
        summary,
        format_html("<p>Latest failures:</p><ul>{}</ul>", failures) if failed else "",
    )


@admin.register(ConnectionSnapshot)
class ConnectionSnapshotAdmin(RoleAdminMixin, admin.ModelAdmin):
    """The periodic checks' results, for looking back at an outage; written only by the checks."""

    view_role = roles.DATABASES_READ
    manage_role = roles.INFRASTRUCTURE_ADMIN
    list_display = ["checked_at", "connection", "is_healthy", "response_time_ms", "error_cause"]
    list_filter = ["is_healthy", "error_cause", "connection__database_type", "connection__region"]
    list_select_related = ["connection"]
    search_fields = ["connection__name", "error"]
    date_hierarchy = "checked_at"

    def has_add_permission(self, request: HttpRequest, *args) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
