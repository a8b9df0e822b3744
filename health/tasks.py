"""django-q2 tasks of the health app. Each calls one service."""

from __future__ import annotations

from health import services


def check_connections() -> str:
    """Probe every active connection and record the snapshots (the periodic schedule's task)."""
    run = services.connections_check()
    return f"{run.connections_checked} checked, {run.connections_unhealthy} unhealthy"
