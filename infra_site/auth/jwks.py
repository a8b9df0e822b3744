"""A cache of the provider's signing keys (JWKS): no network call per token while the keys are known.

A token naming an unknown key id makes the cache refetch the JWKS (the provider rotated its key), but at
most once per ``OIDC_JWKS_REFRESH_INTERVAL`` seconds, so tokens with made-up key ids cannot make us hammer
the provider. Keys older than ``OIDC_JWKS_MAX_AGE`` are refetched too, so a withdrawn key stops working.
"""

from __future__ import annotations

import threading
import time

import jwt
import requests
from django.conf import settings

from infra_site.auth.provider import ProviderUnavailable, endpoints


class UnknownSigningKey(Exception):
    """No key of the provider's JWKS has the token's key id."""


class JwksCache:
    """The signing keys published at one JWKS URL, fetched on demand and kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """Return the RS256 key with id ``kid``, refetching the JWKS when allowed; raise ``UnknownSigningKey``."""
        key = self._keys.get(kid)
        if key is not None and time.monotonic() - self._fetched_at < settings.OIDC_JWKS_MAX_AGE:
            return key
        with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = age >= settings.OIDC_JWKS_MAX_AGE
            if (kid not in self._keys and age >= settings.OIDC_JWKS_REFRESH_INTERVAL) or stale:
                self._keys = self._fetch()
                self._fetched_at = time.monotonic()
            key = self._keys.get(kid)
        if key is None:
            raise UnknownSigningKey(kid)
        return key

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        try:
            response = requests.get(self.url, timeout=settings.OIDC_TIMEOUT)
            response.raise_for_status()
            published = response.json()["keys"]
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            raise ProviderUnavailable(
                "The identity provider's signing keys could not be read.", details={"url": self.url}
            ) from exc
        return {
            entry["kid"]: jwt.PyJWK(entry, algorithm="RS256")
            for entry in published
            if entry.get("kty") == "RSA"
            and entry.get("use", "sig") == "sig"
            and entry.get("alg", "RS256") == "RS256"
            and entry.get("kid")
        }


_caches: dict[str, JwksCache] = {}
_caches_lock = threading.Lock()


def jwks_cache() -> JwksCache:
    """Return the key cache of the configured realm (one per JWKS URL, kept for the process)."""
    url = endpoints().jwks_uri
    cache = _caches.get(url)
    if cache is None:
        with _caches_lock:
            cache = _caches.setdefault(url, JwksCache(url))
    return cache
