"""Startup-phase negotiation seen on the wire: protocol versions, _pq_ options, GSSENC, SSL."""

from __future__ import annotations

import struct

import pytest

from protocols.postgres import messages as m
from proxy.server import ThreadedProxy
from tests.pgwire import RawClient

pytestmark = pytest.mark.postgres


def _startup(c: RawClient, version: int, params: dict[str, str]) -> None:
    c.send(m.StartupMessage(params, version).encode())


def test_newer_minor_version_and_pq_options_are_negotiated_down(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    _startup(c, (3 << 16) | 2, {"user": "demo", "database": "test",
                                "_pq_.made_up_option": "on"})
    code, body = c.recv_message()
    msg = m.decode_backend(code, body)
    assert msg == m.NegotiateProtocolVersion(0, ("_pq_.made_up_option",))
    code, body = c.recv_message()
    auth = m.decode_backend(code, body)
    assert isinstance(auth, m.Authentication) and auth.kind == m.AUTH_SASL
    assert auth.mechanisms == ["SCRAM-SHA-256"]
    c.close()


def test_plain_3_0_gets_no_negotiation(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    _startup(c, 3 << 16, {"user": "demo", "database": "test"})
    code, _ = c.recv_message()
    assert code == b"R"
    c.close()


def test_gssenc_request_answered_n_then_login_works(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    c.send(m.GSSENCRequest().encode())
    assert c.sock.recv(1) == b"N"
    params = c.login()
    assert params.get("server_version")
    c.send(m.Query("SELECT 1").encode())
    msgs = c.until_ready()
    assert any(isinstance(x, m.DataRow) and x.values == (b"1",) for x in msgs)
    c.close()


def test_ssl_request_without_tls_configured_answered_n(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    c.send(m.SSLRequest().encode())
    assert c.sock.recv(1) == b"N"
    c.login()
    c.close()


def test_missing_user_refused(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    _startup(c, 3 << 16, {"database": "test"})
    err = c.error()
    assert err is not None and err.sqlstate == "28000"
    assert "no PostgreSQL user name" in err.message
    c.close()


def test_replication_connection_refused(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    _startup(c, 3 << 16, {"user": "demo", "database": "test", "replication": "database"})
    err = c.error()
    assert err is not None and err.sqlstate == "42501"
    assert "replication" in err.message
    c.close()


def test_startup_packet_too_long_refused(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    c.send(struct.pack("!ii", 20000, 3 << 16))
    err = c.error()
    assert err is not None and err.sqlstate == "08P01"
    assert "invalid length of startup packet" in err.message
    c.close()


def test_backend_key_is_wiregates_own(proxy: ThreadedProxy) -> None:
    c = RawClient(proxy.port)
    c.login()
    assert c.key is not None
    c.send(m.Query("SELECT pg_backend_pid()").encode())
    rows = [x for x in c.until_ready() if isinstance(x, m.DataRow)]
    upstream_pid = int(rows[0].values[0] or b"0")
    assert c.key[0] != upstream_pid
    c.close()
