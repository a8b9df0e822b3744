"""Template tags of the operator console: status badges and progress bars (no query: counters only)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html, format_html_join

from connections import selectors as registry
from migrations_runner.models import MigrationExecution
from migrations_runner.selectors.executions import WaveState

register = template.Library()

BADGE_CLASSES = {
    "pending": "infra-badge-muted",
    "in_progress": "infra-badge-info",
    "running": "infra-badge-info",
    "completed": "infra-badge-ok",
    "succeeded": "infra-badge-ok",
    "failed": "infra-badge-bad",
    "cancelled": "infra-badge-warn",
    "skipped": "infra-badge-muted",
    "rolled_back": "infra-badge-warn",
    "waiting_for_worker": "infra-badge-bad",
    "awaiting_approval": "infra-badge-warn",
    "soaking": "infra-badge-info",
    "halted": "infra-badge-bad",
    "done": "infra-badge-ok",
    "behind": "infra-badge-warn",
    "drifted": "infra-badge-bad",
    "up_to_date": "infra-badge-ok",
    "unknown": "infra-badge-muted",
}


@register.simple_tag(takes_context=True)
def redacted(context: template.Context, error: Any) -> Any:
    """A stored error as the viewer may read it: without hosts, ports and user names unless they hold
    databases:read (one read of the registry per request: included templates have render contexts of their own,
    so it is kept on the request)."""
    request = context.get("request")
    holder: Any = request if request is not None else context.render_context
    redact = getattr(holder, "_error_redactor", None) if request is not None else holder.get("error_redactor")
    if redact is None:
        redact = registry.error_redactor(user=getattr(request, "user", None))
        if request is not None:
            request._error_redactor = redact
        else:
            holder["error_redactor"] = redact
    return redact(error)


@register.simple_tag
def status_badge(status: str, label: str = "") -> str:
    """A coloured badge for an execution, target or fleet status."""
    css = BADGE_CLASSES.get(status, "infra-badge-muted")
    return format_html('<span class="infra-badge {}">{}</span>', css, label or status.replace("_", " "))


def counts_of(execution: MigrationExecution, running: int = 0) -> dict[str, int]:
    """The finished counts of an execution, from its counters."""
    return {
        "succeeded": execution.targets_succeeded,
        "failed": execution.targets_failed,
        "skipped": execution.targets_skipped,
        "cancelled": execution.targets_cancelled,
        "running": running,
        "total": execution.targets_total,
    }


@register.simple_tag
def progress_bar(execution: MigrationExecution, running: int = 0) -> str:
    """A stacked bar: succeeded, failed, skipped, cancelled and running segments of the total, with counts."""
    counts = counts_of(execution, running)
    total = max(counts["total"], 1)
    segments = [
        (name, round(100.0 * counts[name] / total, 2), counts[name])
        for name in ("succeeded", "failed", "skipped", "cancelled", "running")
        if counts[name]
    ]
    finished = counts["succeeded"] + counts["failed"] + counts["skipped"] + counts["cancelled"]
    bar = format_html_join(
        "",
        '<span class="infra-seg infra-seg-{}" style="width:{}%" title="{} {}"></span>',
        ((name, width, count, name) for name, width, count in segments),
    )
    detail = " · ".join(
        f"{counts[n]} {n}" for n in ("succeeded", "failed", "skipped", "cancelled", "running") if counts[n]
    )
    return format_html(
        '<div class="infra-progress" role="progressbar" aria-valuemin="0" aria-valuemax="{}" aria-valuenow="{}">'
        '<div class="infra-bar">{}</div><div class="infra-progress-text">{}/{}{}</div></div>',
        counts["total"],
        finished,
        bar,
        finished,
        counts["total"],
        f" — {detail}" if detail else "",
    )


@register.simple_tag
def wave_bar(waves: list[WaveState]) -> str:
    """The canary waves as segments of one bar, each as wide as its share of the waved targets and filled by
    its succeeded, failed, skipped, cancelled and running targets."""
    total = max(sum(w.size for w in waves), 1)
    segments = []
    for wave in waves:
        size = max(wave.size, 1)
        counts = {
            "succeeded": wave.succeeded,
            "failed": wave.failed,
            "skipped": wave.skipped,
            "cancelled": wave.cancelled,
            "running": wave.running,
        }
        inner = format_html_join(
            "",
            '<span class="infra-seg infra-seg-{}" style="width:{}%"></span>',
            ((name, round(100.0 * count / size, 2)) for name, count in counts.items() if count),
        )
        segments.append(
            format_html(
                '<div class="infra-wave infra-wave-{}" style="width:{}%" title="wave {}: {} target(s), {}">'
                '<div class="infra-bar">{}</div><div class="infra-wave-label">{} · {}</div></div>',
                wave.state,
                round(100.0 * wave.size / total, 2),
                wave.wave,
                wave.size,
                wave.state.replace("_", " "),
                inner,
                wave.wave,
                wave.state.replace("_", " "),
            )
        )
    return format_html(
        '<div class="infra-waves" id="wave-bar">{}</div>', format_html_join("", "{}", ((s,) for s in segments))
    )
