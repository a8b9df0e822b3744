"""Canary waves: an execution's tenant targets split into waves, each with a failure budget and a gate.

A wave plan is chosen when the execution is planned. The tenant targets that have work are ordered by the
canary rule (an explicit canary list first, then the smallest schemas first), cut into waves by the sizes
asked for (counts, or percentages of those targets; the rest make a last wave), and each wave becomes a
phase of its own after the phase the tenants were planned in. The lanes then run a wave like any phase.

Between two waves there is a gate (see ``runner.phase_advance``): the next wave opens only after the soak
time (``wave_pause_s``) and, with ``wave_approval``, after a person's Continue. A wave whose failures exceed
the failure budget halts the execution: what is still pending is skipped with the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from connections import validators
from migrations_runner.engine.targets import Target
from migrations_runner.exceptions import InvalidWaves

MAX_WAVES = 20
MAX_PAUSE_S = 7 * 24 * 3600
_SIZE_RE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<percent>%)?$")


@dataclass(frozen=True)
class Size:
    """A wave's size or a failure budget: a count, or a percentage (of the waved targets, of the wave)."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, text: str | int, *, field_name: str) -> Size:
        match = _SIZE_RE.fullmatch(str(text).strip())
        if match is None:
            raise InvalidWaves(
                f"Invalid {field_name}: {text!r} is neither a count (10) nor a percentage (5%).",
                details={field_name: [f"{text!r} is neither a count such as 10 nor a percentage such as 5%."]},
            )
        value, percent = float(match["number"]), bool(match["percent"])
        if percent and not 0 <= value <= 100:
            raise InvalidWaves(
                f"Invalid {field_name}: {text!r} is not between 0% and 100%.",
                details={field_name: [f"{text!r} is not between 0% and 100%."]},
            )
        if not percent and value != int(value):
            raise InvalidWaves(
                f"Invalid {field_name}: a count is a whole number, not {text!r}.",
                details={field_name: [f"A count is a whole number, not {text!r}."]},
            )
        return cls(value=value, percent=percent)

    def of(self, total: int) -> int:
        """The size this is of ``total`` targets: a percentage rounds up (a wave holds at least one)."""
        if not self.percent:
            return int(self.value)
        return max(1, math.ceil(total * self.value / 100)) if self.value else 0

    def __str__(self) -> str:
        number = f"{self.value:g}"
        return f"{number}%" if self.percent else number


@dataclass(frozen=True)
class WaveOptions:
    """How an execution rolls out in waves; ``sizes`` empty means no waves."""

    sizes: tuple[Size, ...] = ()
    failure_budget: Size = field(default_factory=lambda: Size(0, False))
    pause_s: int = 0
    approval: bool = False
    canary: tuple[str, ...] = ()

    @classmethod
    def parse(
        cls,
        *,
        waves: Sequence[str | int] | None = None,
        failure_budget: str | int | None = None,
        pause_s: int | None = None,
        approval: bool = False,
        canary: Iterable[str] | None = None,
    ) -> WaveOptions:
        """Validate what an interface was given; raise ``InvalidWaves`` (400) naming the field."""
        sizes = tuple(Size.parse(w, field_name="waves") for w in waves or ())
        problems: dict[str, list[str]] = {}
        if len(sizes) > MAX_WAVES:
            problems["waves"] = [f"At most {MAX_WAVES} waves (and a last one for the rest)."]
        if any(s.of(1_000_000) == 0 for s in sizes):
            problems["waves"] = ["A wave holds at least one target."]
        canary = tuple(dict.fromkeys(canary or ()))
        for slug in canary:
            try:
                validators.validate_tenant_slug(slug)
            except ValidationError as exc:
                problems.setdefault("canary", []).append(f"{slug!r}: {exc.messages[0]}")
        if pause_s is not None and not 0 <= pause_s <= MAX_PAUSE_S:
            problems["wave_pause"] = [f"The pause between waves is 0 to {MAX_PAUSE_S} seconds."]
        options_without_waves = failure_budget not in (None, "") or pause_s or approval or canary
        if options_without_waves and not sizes and not canary:
            problems.setdefault("waves", []).append(
                "failure_budget, wave_pause, wave_approval and canary apply to waves: give waves (or a canary list)."
            )
        if problems:
            name, messages = next(iter(problems.items()))
            raise InvalidWaves(f"Invalid {name}: {messages[0]}", details=problems)
        budget = (
            Size.parse(failure_budget, field_name="failure_budget")
            if failure_budget not in (None, "")
            else Size(0, False)
        )
        return cls(sizes=sizes, failure_budget=budget, pause_s=pause_s or 0, approval=approval, canary=canary)

    @property
    def enabled(self) -> bool:
        return bool(self.sizes or self.canary)

    def describe(self) -> str:
        parts = [f"waves {', '.join(str(s) for s in self.sizes) or '-'} then the rest"]
        if self.canary:
            parts.insert(0, f"canary {', '.join(self.canary)}")
        parts.append(f"failure budget {self.failure_budget} per wave")
        if self.pause_s:
            parts.append(f"{self.pause_s} s soak between waves")
        if self.approval:
            parts.append("approval between waves")
        return "; ".join(parts)


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
