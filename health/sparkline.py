"""A latency trend as a small inline SVG, drawn on the server (no JavaScript). Plain Python."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

WIDTH = 320
HEIGHT = 48
PAD = 3


@dataclass(frozen=True)
class Point:
    at: datetime
    latency_ms: float | None  # None: the check failed


def sparkline(points: list[Point], *, start: datetime, end: datetime, title: str) -> str:
    """Return an SVG with the latencies as a line over [start, end] and failed checks as red marks below it."""
    span = max((end - start).total_seconds(), 1.0)
    latencies = [p.latency_ms for p in points if p.latency_ms is not None]
    top = max(latencies, default=1.0) or 1.0

    def x(at: datetime) -> float:
        return PAD + (WIDTH - 2 * PAD) * min(max((at - start).total_seconds() / span, 0.0), 1.0)

    def y(latency: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD - 6) * latency / top

    line = " ".join(f"{x(p.at):.1f},{y(p.latency_ms):.1f}" for p in points if p.latency_ms is not None)
    failures = "".join(
        f'<line x1="{x(p.at):.1f}" y1="{HEIGHT - 8}" x2="{x(p.at):.1f}" y2="{HEIGHT}" stroke="#c62828" '
        'stroke-width="2"/>'
        for p in points
        if p.latency_ms is None
    )
    polyline = f'<polyline points="{line}" fill="none" stroke="#2e7d32" stroke-width="1.5"/>' if line else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="health-sparkline" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label={quoteattr(title)}>'
        f"<title>{escape(title)}</title>"
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#f8f8f8" stroke="#ddd"/>'
        f"{polyline}{failures}</svg>"
    )
