"""Encryption at rest for secrets in the control database, keyed from ``APP_ENCRYPTION_KEY``.

The cipher is django-cryptography's ``FernetBytes`` (AES-CBC with an HMAC-SHA256
signature). Its stock field takes the signing key from ``SECRET_KEY``; here both
the encryption and the signing key derive from ``APP_ENCRYPTION_KEY`` alone, so
rotating ``SECRET_KEY`` (sessions, CSRF) never touches stored secrets.

Key rotation: values encrypted with a key listed in ``APP_ENCRYPTION_KEY_PREVIOUS``
still decrypt, and ``rotate_encryption_key`` re-encrypts them with the current key.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from django.conf import settings
from django.db import models
from django_cryptography.core.signing import BadSignature, FernetSigner
from django_cryptography.fields import EncryptedMixin
from django_cryptography.utils.crypto import FernetBytes, InvalidToken

_SALT = b"infra-control-plane:secrets:v1"


class DecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


@functools.lru_cache(maxsize=16)
def cipher_for(secret: str) -> FernetBytes:
    """Return the cipher for a key string (PBKDF2-SHA256 gives 32 bytes for AES and 32 for the HMAC)."""
    material = PBKDF2HMAC(algorithm=hashes.SHA256(), length=64, salt=_SALT, iterations=200_000).derive(secret.encode())
    return FernetBytes(key=material[:32], signer=FernetSigner(key=material[32:], algorithm="sha256"))


def derive_ciphers() -> None:
    """Derive the cipher of every configured key now. A process that forks workers calls it first, so that they
    inherit the ciphers instead of each deriving its own (the PBKDF2 above: 50 to 150 ms of CPU a key and process,
    paid by every worker at its first secret)."""
    for key in decryption_keys():
        cipher_for(key)


def current_key() -> str:
    return settings.APP_ENCRYPTION_KEY


def decryption_keys(extra: Iterable[str] = ()) -> list[str]:
    """Return the keys to try when decrypting: the current one first, then older ones."""
    keys = [current_key(), *settings.APP_ENCRYPTION_KEY_PREVIOUS, *extra]
    return list(dict.fromkeys(key for key in keys if key))


def encrypt_text(plaintext: str, *, key: str | None = None) -> bytes:
    """Encrypt ``plaintext`` with ``key`` (default the current key)."""
    return cipher_for(key or current_key()).encrypt(plaintext.encode())


def decrypt_with(token: bytes, key: str) -> str:
    """Decrypt ``token`` with exactly ``key``; raise ``DecryptionError`` when it does not fit."""
    try:
        return cipher_for(key).decrypt(bytes(token)).decode()
    except (BadSignature, InvalidToken, ValueError) as exc:
        raise DecryptionError("The value was not encrypted with this key.") from exc


def decrypt_text(token: bytes, *, extra_keys: Iterable[str] = ()) -> tuple[str, str]:
    """Decrypt ``token`` with the first key that fits; return ``(plaintext, key)``."""
    for key in decryption_keys(extra_keys):
        try:
            return decrypt_with(token, key), key
        except DecryptionError:
            continue
    raise DecryptionError("A stored secret cannot be decrypted with APP_ENCRYPTION_KEY or APP_ENCRYPTION_KEY_PREVIOUS.")


class EncryptedTextField(EncryptedMixin, models.TextField):
    """A text column stored as ciphertext (a binary column) under the current key."""

    base_class = models.TextField
    wasinstance = True

    def _dump(self, value: str) -> bytes:
        return encrypt_text(str(value))

    def _load(self, value: bytes) -> str:
        return decrypt_text(value)[0]

    def deconstruct(self):
        name, _path, args, kwargs = models.TextField.deconstruct(self)
        return name, "infra_site.crypto.EncryptedTextField", args, kwargs
