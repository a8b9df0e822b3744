"""What a run acts on: a scope narrowed by regions, connections and tenants.

One value object for every interface: the API's serializers and the admin's forms build it from their
input, the commands from their arguments, schedules and executions from what they stored, and the
selectors resolve it to targets. Its validation is the one place that says what a valid selection is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from connections import validators
from migrations_runner.exceptions import InvalidSelection


class Scope(models.TextChoices):
    """Which database types an execution reaches (narrowed by the filters)."""

    ALL = "all", "All"
    ADMIN = "admin", "Admin"
    REGIONAL = "regional", "Regional (shared + analytics)"
    TENANT = "tenant", "Tenants"
    SINGLE = "single", "Single target"


FILTER_NAMES = ("regions", "connections", "tenants")
_VALIDATORS: dict[str, Callable[[str], None]] = {
    "regions": validators.validate_region,
    "connections": validators.validate_connection_name,
    "tenants": validators.validate_tenant_slug,
}
SHOWN_PER_FILTER = 5
# The most values a filter takes: more than any fleet lists by name, and a bound on what one request costs.
# With the query's own parameters they stay under SQLite's classic limit of 999 per query once the tenants
# are looked up in slices (see selectors.targets_resolve).
MAX_FILTER_VALUES = {"regions": 100, "connections": 500, "tenants": 10_000}


def too_many(name: str, count: int) -> str:
    """The refusal of a filter with more than ``MAX_FILTER_VALUES`` values."""
    return f"At most {MAX_FILTER_VALUES[name]} {name} may be named; got {count}."


@dataclass(frozen=True)
class TargetSelection:
    """A scope (which database types) and the filters that narrow it; empty filters narrow nothing.

    Filters keep their order, without repeats. An invalid selection raises ``InvalidSelection`` (400) with
    ``details`` naming each wrong field.
    """

    scope: str = Scope.ALL
    regions: Sequence[str] = ()
    connections: Sequence[str] = ()
    tenants: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in FILTER_NAMES:
            values = getattr(self, name)
            if isinstance(values, str):  # a bare string is one value, not its characters
                values = (values,)
            object.__setattr__(self, name, tuple(dict.fromkeys(str(v) for v in values or ())))
        problems = self._problems()
        if problems:
            field, messages = next(iter(problems.items()))
            raise InvalidSelection(f"Invalid target selection: {field}: {messages[0]}", details=problems)

    def _problems(self) -> dict[str, list[str]]:
        problems: dict[str, list[str]] = {}
        if self.scope not in Scope.values:
            problems["scope"] = [f"Unknown scope {self.scope!r}; one of {', '.join(Scope.values)}."]
        for name in FILTER_NAMES:
            values = getattr(self, name)
            if len(values) > MAX_FILTER_VALUES[name]:
                problems[name] = [too_many(name, len(values))]
                continue
            for value in values:
                try:
                    _VALIDATORS[name](value)
                except ValidationError as exc:
                    problems.setdefault(name, []).append(f"{value!r}: {exc.messages[0]}")
        if self.tenants and self.scope not in (Scope.ALL, Scope.TENANT, Scope.SINGLE):
            problems.setdefault("tenants", []).append(f"Scope {self.scope!r} holds no tenant schemas.")
        return problems

    @classmethod
    def from_stored(cls, scope: str, filters: Mapping[str, Any] | None) -> TargetSelection:
        """The selection an execution or a schedule stored (``scope`` and its ``filters`` JSON)."""
        filters = filters or {}
        return cls(scope=scope, **{name: filters.get(name) or () for name in FILTER_NAMES})

    def as_filters(self) -> dict[str, list[str]]:
        """The filters as stored on executions and schedules."""
        return {name: list(getattr(self, name)) for name in FILTER_NAMES}

    def as_kwargs(self) -> dict[str, Any]:
        """Scope and filters as keyword arguments (forms' initial data, links)."""
        return {"scope": self.scope, **self.as_filters()}

    @property
    def narrowed(self) -> bool:
        return any(getattr(self, name) for name in FILTER_NAMES)

    def describe(self, scope_label: str | None = None) -> str:
        """``Tenants; regions eu-west; tenants acme, globex``: the scope and its filters in words."""
        parts = [scope_label or Scope(self.scope).label]
        for name in FILTER_NAMES:
            values = list(getattr(self, name))
            if values:
                shown = ", ".join(values[:SHOWN_PER_FILTER])
                if len(values) > SHOWN_PER_FILTER:
                    shown += f" and {len(values) - SHOWN_PER_FILTER} more"
                parts.append(f"{name} {shown}")
        return "; ".join(parts)

    def replace(self, **changes: Iterable[str] | str) -> TargetSelection:
        """A copy with some fields changed (validated again)."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return TargetSelection(**values)
