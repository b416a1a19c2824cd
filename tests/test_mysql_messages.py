"""MySQL connection-phase codec: round trips, malformed payloads refused, and a real login to
the local MariaDB done with these messages alone (greeting decoded, response encoded, OK and
ERR read back)."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.mysql import messages as my
from protocols.mysql.packets import PacketError, PacketReader, encode

MYSQL_HOST = os.environ.get("WIREGATE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("WIREGATE_TEST_MYSQL_PORT", "3306"))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, (1 << 64) - 1))
def test_length_encoded_integers_round_trip(n: int) -> None:
    assert my.Reader(my.lenenc_int(n), "x").lenenc_int() == n


def test_handshake_round_trips_with_mariadb_extended_capabilities() -> None:
    caps = (my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_PLUGIN_AUTH
            | my.CLIENT_SSL | my.MARIADB_CLIENT_STMT_BULK_OPERATIONS)
    hello = my.HandshakeV10("11.0.0-MariaDB", 77, bytes(range(1, 21)), caps)
    back = my.HandshakeV10.decode(hello.encode())
    assert back == hello
    resp = my.HandshakeResponse41(
        caps | my.CLIENT_CONNECT_WITH_DB | my.CLIENT_CONNECT_ATTRS
        | my.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, "demo", b"\x01" * 20, "test",
        "mysql_native_password", {"_client_name": "libmariadb", "program_name": "mariadb"})
    assert my.HandshakeResponse41.decode(resp.encode()) == resp


def test_ssl_request_is_recognised() -> None:
    req = my.HandshakeResponse41.decode(my.ssl_request(my.CLIENT_PROTOCOL_41 | my.CLIENT_SSL))
    assert req.is_ssl_request


@pytest.mark.parametrize("payload", [
    b"", b"\x0a5.5\x00", b"\x09" + b"x" * 40,
    b"\x0a" + b"11.0\x00" + b"\x01\x00\x00\x00" + b"12345678",     # cut after part 1
])
def test_malformed_greetings_are_packet_errors(payload: bytes) -> None:
    with pytest.raises(PacketError):
        my.HandshakeV10.decode(payload)


def test_err_and_ok_round_trip() -> None:
    err = my.ERR(1142, "wiregate: blocked by rule no-ddl: DROP is not allowed", "42000")
    assert my.ERR.decode(err.encode()) == err
    ok = my.OK(3, 70000, 0x0002, 1, b"Rows matched: 3")
    assert my.OK.decode(ok.encode()) == ok
    assert my.is_eof(b"\xfe\x00\x00\x02\x00") and not my.is_eof(ok.encode(0xFE) + b"x" * 9)


def test_native_password_matches_the_server_formula() -> None:
    scramble = bytes(range(20))
    got = my.native_password(b"secret", scramble)
    assert len(got) == 20 and my.native_password(b"", scramble) == b""
    assert got != my.native_password(b"secret", bytes(range(1, 21)))


def _packets(sock: socket.socket, reader: PacketReader) -> bytes:
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        got = reader.feed(data)
        if got:
            return got[0].payload


@pytest.mark.mysql
@pytest.mark.parametrize("database, ok", [("test", True), ("wg_no_such_db", False)])
def test_login_to_the_local_mariadb_with_the_codec(database: str, ok: bool) -> None:
    try:
        sock = socket.create_connection((MYSQL_HOST, MYSQL_PORT), timeout=10)
    except OSError as exc:
        pytest.skip(f"MariaDB/MySQL not reachable at {MYSQL_HOST}:{MYSQL_PORT}: {exc}")
    with sock:
        reader = PacketReader(expect=0)
        hello = my.HandshakeV10.decode(_packets(sock, reader))
        assert hello.capabilities & my.CLIENT_PROTOCOL_41 and len(hello.auth_data) == 20
        caps = (my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_PLUGIN_AUTH
                | my.CLIENT_CONNECT_WITH_DB | my.CLIENT_CONNECT_ATTRS
                | my.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
        caps &= hello.capabilities | my.CLIENT_CONNECT_ATTRS
        resp = my.HandshakeResponse41(caps, "root", my.native_password(b"", hello.auth_data),
                                      database, "mysql_native_password",
                                      {"program_name": "wiregate-test"})
        sock.sendall(encode(resp.encode(), 1))
        reader.reset(2)     # one sequence for both directions: ours was 1
        answer = _packets(sock, reader)
    if ok:
        assert answer[:1] == b"\x00", my.ERR.decode(answer)
        assert my.OK.decode(answer).status & 0x0002   # autocommit
    else:
        err = my.ERR.decode(answer)
        assert err.errno == 1049 and err.sqlstate == "42000" and "wg_no_such_db" in err.message


def _login(caps_wanted: int) -> tuple[socket.socket, PacketReader, int]:
    try:
        sock = socket.create_connection((MYSQL_HOST, MYSQL_PORT), timeout=10)
    except OSError as exc:
        pytest.skip(f"MariaDB/MySQL not reachable at {MYSQL_HOST}:{MYSQL_PORT}: {exc}")
    reader = PacketReader(expect=0)
    hello = my.HandshakeV10.decode(_packets(sock, reader))
    caps = caps_wanted & hello.capabilities
    resp = my.HandshakeResponse41(caps, "root", b"", "test", "mysql_native_password")
    sock.sendall(encode(resp.encode(), 1))
    reader.reset(2)
    assert _packets(sock, reader)[:1] == b"\x00"
    return sock, reader, caps


@pytest.mark.mysql
@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_text_result_set_from_the_local_mariadb(deprecate_eof: bool) -> None:
    wanted = (my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_PLUGIN_AUTH
              | my.CLIENT_CONNECT_WITH_DB | (my.CLIENT_DEPRECATE_EOF if deprecate_eof else 0))
    sock, reader, caps = _login(wanted)
    with sock:
        sock.sendall(encode(my.query("SELECT 1 AS a, 'x\\'y' AS b, NULL AS c, "
                                     "TABLE_NAME FROM information_schema.TABLES "
                                     "WHERE TABLE_NAME = 'COLUMNS' LIMIT 1"), 0))
        reader.reset(1)
        payloads: list[bytes] = []
        while True:
            data = sock.recv(65536)
            payloads += [p.payload for p in reader.feed(data)]
            last = payloads[-1] if payloads else b""
            done = last[:1] == b"\xff" or (
                last[:1] == b"\xfe" and (len(payloads) > 5 if deprecate_eof
                                         else sum(my.is_eof(p) for p in payloads) == 2))
            if done:
                break
    count = my.Reader(payloads[0], "count").lenenc_int()
    assert count == 4
    columns = [my.ColumnDefinition.decode(p) for p in payloads[1:5]]
    assert [c.name for c in columns] == ["a", "b", "c", "TABLE_NAME"]
    assert columns[3].org_table == "TABLES" and columns[3].org_name == "TABLE_NAME"
    assert all(my.ColumnDefinition.decode(c.encode()) == c for c in columns)
    rest = payloads[5:] if deprecate_eof else payloads[6:]
    assert my.text_row(rest[0], 4) == (b"1", b"x'y", None, b"COLUMNS")
    assert my.encode_text_row((b"1", b"x'y", None, b"COLUMNS")) == rest[0]
    assert rest[-1][:1] == b"\xfe" and (caps & my.CLIENT_DEPRECATE_EOF) == (
        my.CLIENT_DEPRECATE_EOF if deprecate_eof else 0)


class _Inbox:
    """Payloads as they arrive, taken a given number at a time (several may come in one
    read)."""

    def __init__(self, sock: socket.socket, reader: PacketReader) -> None:
        self.sock, self.reader = sock, reader
        self.got: list[bytes] = []

    def take(self, n: int) -> list[bytes]:
        while len(self.got) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.got += [p.payload for p in self.reader.feed(data)]
        out, self.got = self.got[:n], self.got[n:]
        return out


@pytest.mark.mysql
def test_binary_protocol_with_the_local_mariadb() -> None:
    from protocols.mysql import binary as b
    from protocols.mysql import types as t

    wanted = (my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_PLUGIN_AUTH
              | my.CLIENT_CONNECT_WITH_DB | my.CLIENT_DEPRECATE_EOF)
    sock, reader, caps = _login(wanted)
    eofs = 0 if caps & my.CLIENT_DEPRECATE_EOF else 1
    inbox = _Inbox(sock, reader)
    with sock:
        sql = ("SELECT ? AS s, CAST(? AS SIGNED) AS i, CAST('2024-02-29 12:34:56.5' AS "
               "DATETIME(1)) AS d, NULL AS n, 2.5e0 AS f")
        sock.sendall(encode(bytes([my.COM_STMT_PREPARE]) + sql.encode(), 0))
        reader.reset(1)
        ok = b.PrepareOK.decode(inbox.take(1)[0])
        assert (ok.columns, ok.params) == (5, 2)
        inbox.take(ok.params + ok.columns + 2 * eofs)   # definitions
        params = (b.Param(t.VAR_STRING, b.string_value(b"jane@example.com")),
                  b.Param(t.LONGLONG, (-7).to_bytes(8, "little", signed=True)))
        execute = b.Execute(ok.statement_id, params)
        assert b.Execute.decode(execute.encode(), 2) == execute
        sock.sendall(encode(execute.encode(), 0))
        reader.reset(1)
        answer = inbox.take(1 + 5 + eofs + 1 + 1)
        columns = [my.ColumnDefinition.decode(p) for p in answer[1:6]]
        types = [c.type for c in columns]
        row = b.binary_row(answer[6 + eofs], types)
        assert row[0] == b.string_value(b"jane@example.com")
        assert int.from_bytes(row[1] or b"", "little", signed=True) == -7
        assert row[2] == bytes([11]) + struct.pack("<HBBBBBI", 2024, 2, 29, 12, 34, 56, 500000)
        assert row[3] is None and struct.unpack("<d", row[4] or b"")[0] == 2.5
        assert b.encode_binary_row(row) == answer[6 + eofs]
        assert answer[-1][:1] == b"\xfe"
