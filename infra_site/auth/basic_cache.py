"""Verified HTTP Basic credentials, remembered for ``BASIC_AUTH_CACHE_SECONDS`` in this process.

A Basic request otherwise checks the address and the user's lockout, loads the user, hashes the password (PBKDF2:
a quarter of a second of CPU in production) and loads the user's roles: five queries and the hash on every call a
script or a dashboard makes. Once a username and password have passed all of that from one client address, the
same three are let in for the configured seconds without any of it.

What is kept is a keyed hash of the address, the username and the password (the key is random, made per
process, never stored), with the user and its roles; never the password. Wrong passwords are never remembered,
so each one still goes through the lockout and is counted. In this process every entry is forgotten when a user
or a group is saved or deleted, a user's groups change, a login fails, or the login settings change; changes made
by another process (another worker, a command) reach this one's entries within the configured seconds.
``BASIC_AUTH_CACHE_SECONDS = 0`` checks every request in full.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.auth.signals import user_login_failed
from django.core.signals import setting_changed
from django.db.models.signals import m2m_changed, post_delete, post_save

# Entries kept at most (the oldest go first): distinct clients of one worker, not requests.
MAX_ENTRIES = 1024

_key = secrets.token_bytes(32)
_entries: OrderedDict[bytes, tuple[float, User]] = OrderedDict()
_lock = threading.Lock()


def _digest(address: str | None, username: str, password: str) -> bytes:
    message = "\0".join((address or "", username, password)).encode("utf-8", "surrogatepass")
    return hmac.new(_key, message, hashlib.sha256).digest()


def lifetime() -> float:
    """Seconds a verified credential is remembered; 0 when remembering is off (or local logins are)."""
    return float(settings.BASIC_AUTH_CACHE_SECONDS) if settings.LOCAL_LOGIN_ENABLED else 0.0


def get(address: str | None, username: str, password: str) -> User | None:
    """The user these credentials verified from ``address`` less than ``lifetime()`` ago (a copy), else None."""
    if lifetime() <= 0:
        return None
    digest = _digest(address, username, password)
    with _lock:
        entry = _entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del _entries[digest]
            return None
        _entries.move_to_end(digest)
        user = entry[1]
    return copy.copy(user)


def put(address: str | None, username: str, password: str, user: User, roles: frozenset[str]) -> None:
    """Remember that these credentials verified as ``user`` (holding ``roles``) from ``address``."""
    seconds = lifetime()
    if seconds <= 0:
        return
    kept = copy.copy(user)
    kept._infra_roles = roles  # type: ignore[attr-defined]  # what infra_site.roles.user_roles reads
    digest = _digest(address, username, password)
    with _lock:
        _entries[digest] = (time.monotonic() + seconds, kept)
        _entries.move_to_end(digest)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)


def clear(*args: Any, **kwargs: Any) -> None:
    """Forget every remembered credential (also a signal receiver)."""
    with _lock:
        _entries.clear()


def _login_settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("BASIC_AUTH_CACHE_SECONDS", "LOCAL_LOGIN_ENABLED", "AUTHENTICATION_BACKENDS", "PASSWORD_HASHERS"):
        clear()


def connect_signals() -> None:
    """Forget the remembered credentials whenever what they stand for may have changed in this process."""
    for model in (User, Group):
        post_save.connect(clear, sender=model, dispatch_uid=f"basic_cache.save.{model.__name__}")
        post_delete.connect(clear, sender=model, dispatch_uid=f"basic_cache.delete.{model.__name__}")
    m2m_changed.connect(clear, sender=User.groups.through, dispatch_uid="basic_cache.user_groups")
    m2m_changed.connect(clear, sender=User.user_permissions.through, dispatch_uid="basic_cache.user_permissions")
    user_login_failed.connect(clear, dispatch_uid="basic_cache.login_failed")
    setting_changed.connect(_login_settings_changed, dispatch_uid="basic_cache.settings")
