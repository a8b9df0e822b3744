"""The one way services change a model instance from a mapping of new values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models

from infra_site.errors import ValidationFailed


def model_update(instance: models.Model, *, fields: Iterable[str], changes: Mapping[str, Any]) -> list[str]:
    """Set on ``instance`` each of ``changes`` that differs from its current value; return the changed names.

    A key outside ``fields`` (the names the caller lets change) raises ``ValidationFailed`` naming it, before
    anything is set. Nothing is validated or saved here: the caller cleans and saves ``update_fields``.
    """
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ValidationFailed(f"Unknown fields: {', '.join(unknown)}.", details={"fields": unknown})
    changed = [name for name, value in changes.items() if getattr(instance, name) != value]
    for name in changed:
        setattr(instance, name, changes[name])
    return changed
