"""Encryption at rest: keyed from APP_ENCRYPTION_KEY only, with previous keys for rotation."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra_site import crypto
from tests.support.tools import coverage_env

ROOT = Path(__file__).resolve().parents[2]


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


FORKED_WORKER = """
import os, sys
sys.argv = ["manage.py", {command!r}]
import django
django.setup()
from infra_site import crypto
derived_at_start = crypto.cipher_for.cache_info().currsize
pid = os.fork()
if pid == 0:  # as django-q2 forks a worker, which then reads a secret
    before = crypto.cipher_for.cache_info().misses
    ok = crypto.decrypt_text(crypto.encrypt_text("value"))[0] == "value"
    os._exit(0 if ok and crypto.cipher_for.cache_info().misses == before else 3)
print(derived_at_start, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.parametrize(("command", "expected"), [("qcluster", "1 0"), ("runserver", "0 3")])
def test_a_task_cluster_derives_the_cipher_before_it_forks_its_workers(tmp_path, command, expected):
    """The PBKDF2 of the key runs once in ``qcluster``'s process, at start: a forked worker decrypts without
    deriving it again. Other processes (and their forks) derive it at their first secret."""
    env = {
        "PATH": os.environ["PATH"],
        **coverage_env(),
        "DJANGO_SETTINGS_MODULE": "infra_site.settings",
        "ADMIN_DATABASE_URL": f"sqlite:///{tmp_path / 'control.sqlite3'}",
        "ENV_FILE": os.devnull,
    }
    result = subprocess.run(
        [sys.executable, "-c", FORKED_WORKER.format(command=command)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == expected.split()  # derived at start; the forked worker derived (3) or not (0)
