"""DRF permission classes built on the role hierarchy."""

from __future__ import annotations

from rest_framework import exceptions, permissions

from infra_site import roles


class RolePermission(permissions.BasePermission):
    """Require a role for safe methods and another for writes; 403 names the missing role."""

    read_role: str = ""
    write_roles: tuple[str, ...] = ()

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            raise exceptions.NotAuthenticated()
        needed = (self.read_role,) if request.method in permissions.SAFE_METHODS else self.write_roles
        for role in needed:
            if not roles.has_role(request.user, role):
                raise exceptions.PermissionDenied(
                    detail={"message": f"This action requires the role '{role}'.", "required_role": role}
                )
        return True


def require_roles(*, read: str, write: str | tuple[str, ...] | None = None) -> type[RolePermission]:
    """Return a permission class needing ``read`` for safe methods and ``write`` (default ``read``; a tuple needs
    every role in it) otherwise."""
    writes = write if isinstance(write, tuple) else (write or read,)
    return type(
        f"Require_{read}_{'_'.join(writes)}".replace(":", "_"),
        (RolePermission,),
        {"read_role": read, "write_roles": writes},
    )
