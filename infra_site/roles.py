"""The control plane's roles (Keycloak roles mapped to Django groups) and their hierarchy.

A role is held by membership of the Django group of the same name. Roles imply
others: ``migrations:manage`` implies ``migrations:execute`` implies
``migrations:read``; ``databases:manage`` implies ``databases:read``;
``infrastructure:admin`` implies every role. Superusers hold every role.
"""

from __future__ import annotations

MIGRATIONS_READ = "migrations:read"
MIGRATIONS_EXECUTE = "migrations:execute"
MIGRATIONS_MANAGE = "migrations:manage"
DATABASES_READ = "databases:read"
DATABASES_MANAGE = "databases:manage"
INFRASTRUCTURE_ADMIN = "infrastructure:admin"

ALL_ROLES = (
    MIGRATIONS_READ,
    MIGRATIONS_EXECUTE,
    MIGRATIONS_MANAGE,
    DATABASES_READ,
    DATABASES_MANAGE,
    INFRASTRUCTURE_ADMIN,
)

# Each role and the roles it directly implies.
IMPLIES: dict[str, tuple[str, ...]] = {
    MIGRATIONS_MANAGE: (MIGRATIONS_EXECUTE,),
    MIGRATIONS_EXECUTE: (MIGRATIONS_READ,),
    DATABASES_MANAGE: (DATABASES_READ,),
    INFRASTRUCTURE_ADMIN: (MIGRATIONS_MANAGE, DATABASES_MANAGE),
}


def expand(granted: set[str] | frozenset[str] | list[str]) -> frozenset[str]:
    """Return the granted roles together with every role they imply."""
    result: set[str] = set()
    pending = [role for role in granted if role in ALL_ROLES]
    while pending:
        role = pending.pop()
        if role not in result:
            result.add(role)
            pending.extend(IMPLIES.get(role, ()))
    return frozenset(result)


def user_roles(user) -> frozenset[str]:
    """Return the effective roles of a Django user (cached on the user object)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(ALL_ROLES)
    cached = getattr(user, "_infra_roles", None)
    if cached is None:
        cached = expand(set(user.groups.filter(name__in=ALL_ROLES).values_list("name", flat=True)))
        cache_user_roles(user, cached)
    return cached


def cache_user_roles(user, roles: frozenset[str]) -> None:
    """Cache ``roles`` on the user object as its effective roles (``user_roles`` then returns them)."""
    user._infra_roles = roles


def has_role(user, role: str) -> bool:
    """Tell whether ``user`` holds ``role`` directly or through the hierarchy."""
    return role in user_roles(user)
