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


@pytest.mark.mysql
def test_ed25519_login_to_a_throwaway_mariadb() -> None:
    """A MariaDB account IDENTIFIED VIA ed25519: the server's AuthSwitchRequest nonce signed
    with these functions logs in; a wrong password gets ER_ACCESS_DENIED (1045)."""
    import socket

    from protocols.mysql import messages as my
    from protocols.mysql.packets import PacketReader, encode
    from tests.mycluster import MyClusterError, start_cluster

    try:
        cluster = start_cluster(["--plugin-load-add=auth_ed25519"])
    except MyClusterError as exc:
        pytest.skip(f"throwaway MariaDB server not available: {exc}")
    try:
        cluster.sql("CREATE USER wg_ed@'%' IDENTIFIED VIA ed25519 USING PASSWORD('demo')")
        stored = cluster.sql("SELECT authentication_string FROM mysql.user "
                             "WHERE User = 'wg_ed'")
        assert auth.ed25519_stored_text(b"demo") in stored
        results = []
        for password in (b"demo", b"wrong"):
            with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as sock:
                reader = PacketReader()
                hello = my.HandshakeV10.decode(_first(sock, reader))
                caps = (my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION
                        | my.CLIENT_PLUGIN_AUTH) & hello.capabilities
                sock.sendall(encode(my.HandshakeResponse41(caps, "wg_ed", b"", None,
                                                           "client_ed25519").encode(), 1))
                reader.reset(2)
                switch = _first(sock, reader)
                if switch[:1] == b"\xfe":   # AuthSwitchRequest: plugin name, then the nonce
                    name, _, nonce = switch[1:].partition(b"\0")
                    assert name == b"client_ed25519"
                    sock.sendall(encode(auth.ed25519_sign(password, nonce.rstrip(b"\0")), 3))
                else:   # already asked for client_ed25519: the greeting held the nonce
                    raise AssertionError(switch)
                reader.reset(4)
                results.append(_first(sock, reader))
        assert results[0][:1] == b"\x00"
        assert my.ERR.decode(results[1]).errno == 1045
    finally:
        cluster.stop()


def _first(sock: object, reader: object) -> bytes:
    import socket as _socket

    from protocols.mysql.packets import PacketReader

    assert isinstance(sock, _socket.socket) and isinstance(reader, PacketReader)
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        got = reader.feed(data)
        if got:
            return got[0].payload
