"""Canary waves: an execution's tenant targets split into waves, each with a failure budget and a gate.

A wave plan is chosen when the execution is planned, from its ``WaveOptions`` (``options.py``). The tenant
targets that have work are ordered by the canary rule (an explicit canary list first, then the smallest
schemas first), cut into waves by the sizes asked for (counts, or percentages of those targets; the rest make
a last wave), and each wave becomes a phase of its own after the phase the tenants were planned in. The lanes
then run a wave like any phase.

Between two waves there is a gate (see ``runner.phase_advance``): the next wave opens only after the soak
time (``wave_pause_s``) and, with ``wave_approval``, after a person's Continue. A wave whose failures exceed
the failure budget halts the execution: what is still pending is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from migrations_runner.engine.targets import Target
from migrations_runner.options import Size, WaveOptions


def budget_exceeded(budget: Size, *, failed: int, size: int) -> bool:
    """Whether ``failed`` targets of a wave of ``size`` exceed the budget (a count, or a percentage of the wave)."""
    if budget.percent:
        return failed * 100 > budget.value * size
    return failed > budget.value


def wave_sizes(options: WaveOptions, total: int, canaries: int) -> list[int]:
    """The size of each wave over ``total`` targets: the canary wave (when a list is given), then the sizes asked
    for (percentages of ``total``), then the rest; empty waves are dropped."""
    sizes = [canaries] if canaries else []
    left = total - canaries
    for size in options.sizes:
        if left <= 0:
            break
        n = min(size.of(total), left)
        sizes.append(n)
        left -= n
    if left > 0:
        sizes.append(left)
    return [n for n in sizes if n > 0]


def waves_assign(options: WaveOptions, targets: Sequence[Target], schema_bytes: Mapping[str, int]) -> dict[str, int]:
    """Each target's wave (1-based) by target key: canaries first, then the smallest schemas (ties by label)."""
    canary = {slug: n for n, slug in enumerate(options.canary)}
    first = sorted((t for t in targets if t.tenant_slug in canary), key=lambda t: canary[t.tenant_slug])
    rest = sorted(
        (t for t in targets if t.tenant_slug not in canary), key=lambda t: (schema_bytes.get(t.key, 0), t.label)
    )
    ordered = [*first, *rest]
    assigned: dict[str, int] = {}
    start = 0
    for wave, size in enumerate(wave_sizes(options, len(ordered), len(first)), start=1):
        for target in ordered[start : start + size]:
            assigned[target.key] = wave
        start += size
    return assigned


def canaries_missing(options: WaveOptions, targets: Iterable[Target]) -> list[str]:
    """The canary slugs that are not among the targets with work."""
    present = {t.tenant_slug for t in targets}
    return [slug for slug in options.canary if slug not in present]
