"""Clients logging in to Wiregate: TLS on the listener, ``require_tls``, and what a failed login
tells the client (SQLSTATE and message shape, without revealing which users exist).

psycopg does not expose the SQLSTATE of a failed connection, so those checks use a raw socket.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from protocols.postgres import messages as m
from proxy.certs import generate_ca, generate_server_cert, write_pair
from proxy.server import ThreadedProxy
from tests.conftest import CLIENT_USER, client_dsn
from tests.pgwire import RawClient

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("client-tls")
    ca_cert, ca_key = generate_ca()
    cert, key = generate_server_cert(ca_cert, ca_key, ["127.0.0.1", "localhost"])
    ca_file, _ = write_pair(d, "ca", ca_cert, ca_key)
    cert_file, key_file = write_pair(d, "server", cert, key)
    other_cert, other_key = generate_ca("Some other CA")
    other_file, _ = write_pair(d, "other-ca", other_cert, other_key)
    return Pki(ca_file, cert_file, key_file, other_file)


@pytest.fixture
def tls_proxy(proxy_factory: Callable[..., ThreadedProxy], pki: Pki) -> ThreadedProxy:
    return proxy_factory(tls_cert_file=str(pki.cert), tls_key_file=str(pki.key))


@pytest.fixture
def tls_required(proxy_factory: Callable[..., ThreadedProxy], pki: Pki) -> ThreadedProxy:
    return proxy_factory(tls_cert_file=str(pki.cert), tls_key_file=str(pki.key),
                         require_tls=True)


def _connect(port: int, **extra: str) -> psycopg.Connection[Any]:
    return psycopg.connect(client_dsn(port, **extra), autocommit=True, connect_timeout=10)


def _client_ctx(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _fatal(seen: list[tuple[bytes, object]]) -> dict[str, str]:
    code, msg = seen[-1]
    assert code == b"E", f"login did not fail: {seen}"
    assert isinstance(msg, m.ErrorResponse)
    assert msg.fields["S"] == "FATAL", msg.fields
    return msg.fields


def _shape(seen: list[tuple[bytes, object]]) -> list[object]:
    """The exchange with the random parts (SCRAM nonces, salt, proofs) left out."""
    out: list[object] = []
    for code, msg in seen:
        out.append((code, msg.kind) if isinstance(msg, m.Authentication) else code)
    return out


# -- TLS on the listener --------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verify_full(host: str, tls_proxy: ThreadedProxy, pki: Pki) -> None:
    with _connect(tls_proxy.port, host=host, sslmode="verify-full",
                  sslrootcert=str(pki.ca)) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_verify_full_with_another_ca_is_refused_by_the_client(tls_proxy: ThreadedProxy,
                                                              pki: Pki) -> None:
    """The listener really serves the configured certificate (and nothing a client would
    accept without the right CA)."""
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        _connect(tls_proxy.port, sslmode="verify-full", sslrootcert=str(pki.other_ca))


def test_plaintext_allowed_when_tls_is_optional(tls_proxy: ThreadedProxy) -> None:
    with _connect(tls_proxy.port, sslmode="disable") as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_require_tls_refuses_plaintext_before_authentication(tls_required: ThreadedProxy) -> None:
    w = RawClient(tls_required.port)
    try:
        seen = w.startup()
        # Refused straight away: no password exchange happens on the unencrypted connection.
        assert len(seen) == 1, seen
        fields = _fatal(seen)
        assert fields["C"] == "28000", fields
        assert "TLS" in fields["M"], fields
        assert w.closed_by_peer()
    finally:
        w.close()
    with pytest.raises(psycopg.OperationalError, match="TLS"):
        _connect(tls_required.port, sslmode="disable")


def test_require_tls_accepts_tls(tls_required: ThreadedProxy, pki: Pki) -> None:
    with _connect(tls_required.port, sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
    w = RawClient(tls_required.port, tls=_client_ctx(pki.ca))
    try:
        assert w.startup()[-1][0] == b"Z"
    finally:
        w.close()


def test_sslrequest_inside_tls_is_a_protocol_violation(tls_proxy: ThreadedProxy,
                                                       pki: Pki) -> None:
    w = RawClient(tls_proxy.port, tls=_client_ctx(pki.ca))
    try:
        w.send(m.SSLRequest().encode())
        code, msg = w.read()
        assert code == b"E" and isinstance(msg, m.ErrorResponse)
        assert msg.fields["C"] == "08P01", msg.fields
    finally:
        w.close()


def test_plaintext_smuggled_after_sslrequest_is_refused(tls_proxy: ThreadedProxy) -> None:
    """CVE-2021-23214: bytes sent after SSLRequest but before the handshake were not encrypted
    and may come from a man in the middle; the server must not act on them."""
    smuggled = m.StartupMessage({"user": CLIENT_USER, "database": "test"}).encode()
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as sock:
        sock.sendall(m.SSLRequest().encode() + smuggled)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    # PostgreSQL answers "S" and then a plaintext FATAL; refusing before "S" is fine too.
    # Going ahead with the handshake (S followed by nothing or a TLS alert) is not.
    rest = data[1:] if data.startswith(b"S") else data
    assert rest[:1] == b"E", f"not refused: {data!r}"
    code, length = struct.unpack("!ci", rest[:5])
    err = m.decode_backend(code, rest[5:length + 1])
    assert isinstance(err, m.ErrorResponse)
    assert err.fields["C"] == "08P01", err.fields
    assert len(rest) == length + 1, f"more followed the refusal: {data!r}"


# -- failed logins --------------------------------------------------------------------------


def test_wrong_password(tls_proxy: ThreadedProxy) -> None:
    w = RawClient(tls_proxy.port, password="not-the-password")
    try:
        fields = _fatal(w.startup())
        assert fields["C"] == "28P01", fields
        assert fields["M"] == f'password authentication failed for user "{CLIENT_USER}"'
        assert w.closed_by_peer()
    finally:
        w.close()


def test_unknown_user_looks_like_a_wrong_password(tls_proxy: ThreadedProxy) -> None:
    """Same SASL exchange, same SQLSTATE, same message with only the name changed: a client
    cannot tell a missing user from a wrong password."""
    known = RawClient(tls_proxy.port, password="not-the-password")
    unknown = RawClient(tls_proxy.port, user="nobody_here", password="not-the-password")
    try:
        seen_known = known.startup()
        seen_unknown = unknown.startup()
    finally:
        known.close()
        unknown.close()
    assert _shape(seen_known) == _shape(seen_unknown)
    assert (b"R", m.AUTH_SASL_CONTINUE) in _shape(seen_unknown)  # a full (mock) exchange
    f_known, f_unknown = _fatal(seen_known), _fatal(seen_unknown)
    assert f_unknown["C"] == f_known["C"] == "28P01"
    assert f_unknown["M"] == f_known["M"].replace(f'"{CLIENT_USER}"', '"nobody_here"')
    assert set(f_unknown) == set(f_known)


def test_unknown_database(tls_proxy: ThreadedProxy) -> None:
    w = RawClient(tls_proxy.port, database="no_such_db")
    try:
        fields = _fatal(w.startup())
        assert fields["C"] == "3D000", fields
        assert "no_such_db" in fields["M"]
    finally:
        w.close()


def test_unknown_database_is_not_revealed_before_authentication(
        tls_proxy: ThreadedProxy) -> None:
    w = RawClient(tls_proxy.port, password="not-the-password", database="no_such_db")
    try:
        fields = _fatal(w.startup())
        assert fields["C"] == "28P01", fields
        assert "no_such_db" not in repr(fields)
    finally:
        w.close()


# -- GSSAPI encryption requests ---------------------------------------------------------------


def test_gssenc_prefer_still_connects(tls_proxy: ThreadedProxy) -> None:
    # Harmless when libpq has no GSSAPI (or no credentials): then it never asks.
    with _connect(tls_proxy.port, gssencmode="prefer", sslmode="prefer") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_gssenc_request_is_declined_then_tls_and_login_proceed(tls_proxy: ThreadedProxy,
                                                              pki: Pki) -> None:
    """What libpq does with gssencmode=prefer: GSSENCRequest, "N", then SSLRequest on the same
    connection."""
    sock = socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10)
    try:
        sock.sendall(m.GSSENCRequest().encode())
        assert sock.recv(1) == b"N"
        assert RawClient(sock, tls=_client_ctx(pki.ca)).startup()[-1][0] == b"Z"
    finally:
        sock.close()


def test_gssenc_request_then_plaintext_login(tls_proxy: ThreadedProxy) -> None:
    sock = socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10)
    try:
        sock.sendall(m.GSSENCRequest().encode())
        assert sock.recv(1) == b"N"
        assert RawClient(sock).startup()[-1][0] == b"Z"
    finally:
        sock.close()
