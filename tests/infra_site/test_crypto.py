"""Encryption at rest: keyed from APP_ENCRYPTION_KEY only, with previous keys for rotation."""

import pytest

from infra_site import crypto


def test_round_trip_and_ciphertext_hides_the_plaintext():
    token = crypto.encrypt_text("s3cret-value")
    assert b"s3cret-value" not in token
    assert crypto.decrypt_text(token)[0] == "s3cret-value"


def test_the_key_is_app_encryption_key_not_secret_key(settings):
    token = crypto.encrypt_text("value")
    settings.SECRET_KEY = "a-completely-different-secret-key"
    assert crypto.decrypt_text(token)[0] == "value"
    settings.APP_ENCRYPTION_KEY = "another-encryption-key"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_text(token)


def test_previous_keys_still_decrypt(settings):
    token = crypto.encrypt_text("value")
    old = settings.APP_ENCRYPTION_KEY
    settings.APP_ENCRYPTION_KEY = "the-new-key"
    settings.APP_ENCRYPTION_KEY_PREVIOUS = [old]
    plaintext, key = crypto.decrypt_text(token)
    assert (plaintext, key) == ("value", old)
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_with(token, "the-new-key")


def test_tampered_ciphertext_is_refused():
    token = bytearray(crypto.encrypt_text("value"))
    token[20] ^= 0x01
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt_text(bytes(token))
