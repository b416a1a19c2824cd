"""Authentication plugin arithmetic: each client answer verifies on the server side and fails
for a wrong password; the stored forms match what MariaDB computes; ed25519 agrees with an
independent implementation."""

from __future__ import annotations

import os
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.mysql import auth
from protocols.mysql.messages import native_password

NONCE = bytes(range(40, 60))


def test_native_password_verifies_and_refuses_a_wrong_one() -> None:
    stored = auth.native_stored(b"demo")
    assert auth.native_verify(native_password(b"demo", NONCE), NONCE, stored)
    assert not auth.native_verify(native_password(b"dem0", NONCE), NONCE, stored)
    assert not auth.native_verify(b"", NONCE, stored)
    assert not auth.native_verify(native_password(b"demo", NONCE), bytes(20), stored)


@pytest.mark.mysql
def test_native_stored_form_is_what_mariadb_computes() -> None:
    host = os.environ.get("WIREGATE_TEST_MYSQL_HOST", "127.0.0.1")
    port = os.environ.get("WIREGATE_TEST_MYSQL_PORT", "3306")
    try:
        out = subprocess.run(["mariadb", "-h", host, "-P", port, "-uroot", "-N", "-e",
                              "SELECT PASSWORD('demo')"], capture_output=True, text=True,
                             timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"mariadb client or MariaDB server not available: {exc}")
    assert out == "*" + auth.native_stored(b"demo").hex().upper()


def test_caching_sha2_fast_path_verifies() -> None:
    stored = auth.sha2_stored(b"s3cret")
    token = auth.sha2_scramble(b"s3cret", NONCE)
    assert len(token) == 32 and auth.sha2_verify(token, NONCE, stored)
    assert not auth.sha2_verify(auth.sha2_scramble(b"s3creT", NONCE), NONCE, stored)
    assert auth.sha2_scramble(b"", NONCE) == b""


def test_caching_sha2_rsa_full_authentication() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    sealed = auth.sha2_rsa_password(b"s3cret", NONCE, pem)
    plain = key.decrypt(sealed, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                             algorithm=hashes.SHA1(), label=None))
    assert bytes(b ^ NONCE[i % 20] for i, b in enumerate(plain)) == b"s3cret\0"


def test_ed25519_agrees_with_standard_ed25519_for_a_32_byte_secret() -> None:
    # MariaDB hashes the password with SHA-512 like standard Ed25519 hashes its 32-byte seed:
    # for a 32-byte password both must give the same key and signature.
    secret = bytes(range(32))
    standard = Ed25519PrivateKey.from_private_bytes(secret)
    public = standard.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    assert auth.ed25519_public(secret) == public
    assert auth.ed25519_sign(secret, NONCE) == standard.sign(NONCE)


def test_ed25519_signature_of_any_password_verifies() -> None:
    public = auth.ed25519_public(b"demo")
    signature = auth.ed25519_sign(b"demo", NONCE + NONCE[:12])
    assert len(signature) == 64
    assert auth.ed25519_verify(signature, NONCE + NONCE[:12], public)
    assert not auth.ed25519_verify(signature, NONCE, public)
    assert not auth.ed25519_verify(auth.ed25519_sign(b"dem0", NONCE), NONCE, public)
    assert len(auth.ed25519_stored_text(b"demo")) == 43
