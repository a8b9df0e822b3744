"""Map a token's subject and roles onto a Django user: find or create it by ``sub``, sync its role groups."""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction

from infra_site import roles
from infra_site.models import OidcIdentity

PROFILE_FIELDS = {"email": "email", "given_name": "first_name", "family_name": "last_name"}


def oidc_user_sync(*, issuer: str, claims: dict[str, Any], granted: frozenset[str]) -> User:
    """Return the user of ``claims['sub']`` at ``issuer`` (created at first sight) holding exactly ``granted``."""
    identity = OidcIdentity.objects.select_related("user").filter(issuer=issuer, subject=claims["sub"]).first()
    user = identity.user if identity else _user_create(issuer=issuer, claims=claims)
    _profile_sync(user=user, claims=claims, granted=granted)
    _role_groups_sync(user=user, granted=granted)
    roles.cache_user_roles(user, roles.expand(granted) if user.is_active else frozenset())
    return user


def _user_create(*, issuer: str, claims: dict[str, Any]) -> User:
    try:
        with transaction.atomic():
            user = User.objects.create_user(_free_username(claims), email=claims.get("email") or "")
            user.set_unusable_password()
            user.save(update_fields=["password"])
            OidcIdentity.objects.create(user=user, issuer=issuer, subject=claims["sub"])
            return user
    except IntegrityError:
        # Another request created the same subject at the same moment.
        return OidcIdentity.objects.select_related("user").get(issuer=issuer, subject=claims["sub"]).user


def _free_username(claims: dict[str, Any]) -> str:
    """Return ``preferred_username``, suffixed with a digest of ``sub`` when a local account already has it."""
    wanted = (claims.get("preferred_username") or claims["sub"])[:140]
    if not User.objects.filter(username=wanted).exists():
        return wanted
    return f"{wanted}-{hashlib.sha256(claims['sub'].encode()).hexdigest()[:8]}"


def _profile_sync(*, user: User, claims: dict[str, Any], granted: frozenset[str]) -> None:
    wanted = {field: claims[claim] for claim, field in PROFILE_FIELDS.items() if isinstance(claims.get(claim), str)}
    wanted["is_staff"] = bool(granted)
    wanted["is_superuser"] = roles.INFRASTRUCTURE_ADMIN in granted
    changed = [field for field, value in wanted.items() if getattr(user, field) != value]
    if changed:
        for field in changed:
            setattr(user, field, wanted[field])
        user.save(update_fields=changed)


def _role_groups_sync(*, user: User, granted: frozenset[str]) -> None:
    held = set(user.groups.filter(name__in=roles.ALL_ROLES).values_list("name", flat=True))
    if held == granted:
        return
    if held - granted:
        user.groups.remove(*Group.objects.filter(name__in=held - granted))
    if granted - held:
        # get_or_create: a role group deleted by hand comes back rather than silently withholding the role.
        user.groups.add(*(Group.objects.get_or_create(name=role)[0] for role in sorted(granted - held)))
