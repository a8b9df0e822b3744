"""How a run runs: dry run, failure policy, batch size, timeouts, out-of-order versions and canary waves.

One value object for every interface, as ``TargetSelection`` is for what a run acts on: the admin's forms, the
API's serializers and the commands build it from their input, schedules and executions store it (``as_dict``,
whose keys are the API's field names), and ``execution_start`` refuses it when ``errors`` finds a problem. The
bounds of every option are written here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from connections import validators
from migrations_runner.exceptions import InvalidOptions, InvalidWaves
from migrations_runner.models import OnFailure

BATCH_SIZE_MIN, BATCH_SIZE_MAX = 1, 500
STATEMENT_TIMEOUT_MIN_S, STATEMENT_TIMEOUT_MAX_S = 1, 24 * 3600
LOCK_TIMEOUT_MIN_S, LOCK_TIMEOUT_MAX_S = 0.1, 3600.0
MAX_WAVES = 20
MAX_CANARIES = 100
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
    """How an execution rolls out in waves (``services/waves.py``); ``sizes`` and ``canary`` empty mean no waves."""

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
        if len(canary) > MAX_CANARIES:
            problems["canary"] = [f"At most {MAX_CANARIES} canary tenants; got {len(canary)}."]
        else:
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

    def as_dict(self) -> dict[str, Any]:
        """The wave options under the API's field names, as ``parse`` takes them back."""
        return {
            "waves": [str(size) for size in self.sizes],
            "failure_budget": str(self.failure_budget) if self.enabled else None,
            "wave_pause": self.pause_s,
            "wave_approval": self.approval,
            "canary": list(self.canary),
        }

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


OPTION_NAMES = (
    "dry_run",
    "on_failure",
    "batch_size",
    "statement_timeout_s",
    "lock_timeout_s",
    "out_of_order",
    "waves",
    "failure_budget",
    "wave_pause",
    "wave_approval",
    "canary",
)


def _bounded(value: Any, *, name: str, low: float, high: float, whole: bool, unit: str) -> list[str]:
    """Why ``value`` (None: the setting's default) is not a number from ``low`` to ``high``; [] when it is."""
    if value is None:
        return []
    kind = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        return [f"{name} must be {'a whole number' if whole else 'a number'}; got {value!r}."]
    if not low <= value <= high:  # NaN fails the comparison too
        return [f"{name} must be between {low:g} and {high:g}{unit}."]
    return []


@dataclass(frozen=True)
class ExecutionOptions:
    """Every option of a run. ``None`` timeouts and batch size mean the settings' (``MIGRATION_TIMEOUT``,
    ``MIGRATION_LOCK_TIMEOUT``, ``MIGRATION_BATCH_SIZE``); ``waves`` without sizes or canaries means no waves.

    Building one checks nothing: ``errors`` and ``validate`` do, and ``execution_start`` refuses invalid options.
    """

    dry_run: bool = False
    on_failure: str = OnFailure.CONTINUE
    batch_size: int | None = None
    statement_timeout_s: int | None = None
    lock_timeout_s: float | None = None
    out_of_order: bool = False
    waves: WaveOptions = field(default_factory=WaveOptions)

    @classmethod
    def parse(
        cls,
        *,
        dry_run: bool = False,
        on_failure: str = OnFailure.CONTINUE,
        batch_size: int | None = None,
        statement_timeout_s: int | None = None,
        lock_timeout_s: float | None = None,
        out_of_order: bool = False,
        waves: Sequence[str | int] | None = None,
        failure_budget: str | int | None = None,
        wave_pause: int | None = None,
        wave_approval: bool = False,
        canary: Iterable[str] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> ExecutionOptions:
        """The valid options of an interface's flat input (the keys of ``as_dict``); raise ``InvalidOptions``
        (400) with every wrong option in ``details`` (only wave problems: ``InvalidWaves``). ``names`` says how
        the interface calls an option in the messages (``--batch-size``)."""
        wave_error: InvalidWaves | None = None
        try:
            wave_options = WaveOptions.parse(
                waves=waves, failure_budget=failure_budget, pause_s=wave_pause, approval=wave_approval, canary=canary
            )
        except InvalidWaves as exc:
            wave_error, wave_options = exc, WaveOptions()
        options = cls(
            dry_run=dry_run,
            on_failure=on_failure,
            batch_size=batch_size,
            statement_timeout_s=statement_timeout_s,
            lock_timeout_s=lock_timeout_s,
            out_of_order=out_of_order,
            waves=wave_options,
        )
        problems = options.errors(names=names)
        if wave_error is not None and not problems:
            raise wave_error
        if problems or wave_error is not None:
            _refuse({**(wave_error.details if wave_error else {}), **problems})
        return options

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ExecutionOptions:
        """The options a schedule or an execution stored with ``as_dict`` (missing keys: the defaults)."""
        return cls.parse(**{name: value for name, value in (data or {}).items() if name in OPTION_NAMES})

    def as_dict(self) -> dict[str, Any]:
        """The options under the API's field names, as stored on schedules and executions."""
        return {
            "dry_run": self.dry_run,
            "on_failure": str(self.on_failure),
            "batch_size": self.batch_size,
            "statement_timeout_s": self.statement_timeout_s,
            "lock_timeout_s": self.lock_timeout_s,
            "out_of_order": self.out_of_order,
            **self.waves.as_dict(),
        }

    def errors(self, *, names: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """Each option out of its bounds, with why; empty when every option is valid."""
        named = {name: (names or {}).get(name, name) for name in OPTION_NAMES}
        problems: dict[str, list[str]] = {}
        for name in ("dry_run", "out_of_order"):
            if not isinstance(getattr(self, name), bool):
                problems[name] = [f"{named[name]} must be true or false; got {getattr(self, name)!r}."]
        if self.on_failure not in OnFailure.values:
            problems["on_failure"] = [
                f"{named['on_failure']} must be one of {', '.join(OnFailure.values)}; got {self.on_failure!r}."
            ]
        bounds = {
            "batch_size": (BATCH_SIZE_MIN, BATCH_SIZE_MAX, True, ""),
            "statement_timeout_s": (STATEMENT_TIMEOUT_MIN_S, STATEMENT_TIMEOUT_MAX_S, True, " seconds"),
            "lock_timeout_s": (LOCK_TIMEOUT_MIN_S, LOCK_TIMEOUT_MAX_S, False, " seconds"),
        }
        for name, (low, high, whole, unit) in bounds.items():
            wrong = _bounded(getattr(self, name), name=named[name], low=low, high=high, whole=whole, unit=unit)
            if wrong:
                problems[name] = wrong
        if not isinstance(self.waves, WaveOptions):
            problems["waves"] = [f"{named['waves']} must be wave options; got {self.waves!r}."]
        return problems

    def validate(self, *, names: Mapping[str, str] | None = None) -> ExecutionOptions:
        """Return these options when valid; raise ``InvalidOptions`` (400) naming each wrong one otherwise."""
        problems = self.errors(names=names)
        if problems:
            _refuse(problems)
        return self

    def resolved(self) -> ExecutionOptions:
        """These options with the settings' values in place of the ``None`` ones: what a run uses."""
        return dataclasses.replace(
            self,
            batch_size=self.batch_size or settings.MIGRATION_BATCH_SIZE,
            statement_timeout_s=self.statement_timeout_s or settings.MIGRATION_TIMEOUT,
            lock_timeout_s=self.lock_timeout_s or settings.MIGRATION_LOCK_TIMEOUT,
        )

    def replace(self, **changes: Any) -> ExecutionOptions:
        """A copy with some options changed (not validated: ``execution_start`` does)."""
        return dataclasses.replace(self, **changes)


def _refuse(problems: dict[str, list[str]]) -> None:
    messages = next(iter(problems.values()))
    raise InvalidOptions(f"Invalid execution options: {messages[0]}", details=problems)
