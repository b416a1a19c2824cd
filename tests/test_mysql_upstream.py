"""Wiregate's own login to MySQL/MariaDB upstreams (proxy/mysql_upstream.py), against real
servers: the local MariaDB (root, no password, no TLS) and one throwaway MariaDB for the module
with TLS from a test CA, the ed25519 and PAM (v1) plugins and performance_schema.

caching_sha2_password is MySQL 8's and MariaDB has no server side for it, so that plugin is
exercised against a scripted server built from the project's own codec and server-side checks
(protocols/mysql/auth.py): the only part of this file that is not a real server.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from protocols.mysql import auth
from protocols.mysql import messages as my
from protocols.mysql.packets import PacketReader, encode
from proxy.certs import generate_ca
from proxy.config import Secret, Upstream
from proxy.mysql_upstream import (
    MySQLUpstreamConnection,
    MySQLUpstreamError,
    close,
    connect,
    query,
)
from tests.mycluster import MyCluster, MyClusterError, start_tls_cluster

MYSQL_HOST = os.environ.get("WIREGATE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("WIREGATE_TEST_MYSQL_PORT", "3306"))

MULTI = my.CLIENT_MULTI_STATEMENTS | my.CLIENT_MULTI_RESULTS
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro
    return asyncio.run(main())


def up(host: str, port: int, user: str = "root", password: str = "", tls: str = "disable",
       **changes: object) -> Upstream:
    u = Upstream(name="t", host=host, port=port, dbname="", user=user,
                 password=Secret(value=password, key="t.password"), tls=tls)
    return replace(u, **changes)  # type: ignore[arg-type]


async def login_and(u: Upstream, sql: str, capabilities: int = MULTI,
                    **kw: object) -> tuple[MySQLUpstreamConnection, list[list[tuple[
                        bytes | None, ...]]]]:
    conn = await connect(u, capabilities=capabilities, **kw)  # type: ignore[arg-type]
    try:
        return conn, await query(conn, sql)
    finally:
        await close(conn)


def refused(u: Upstream, capabilities: int = 0, **kw: object) -> MySQLUpstreamError:
    with pytest.raises(MySQLUpstreamError) as info:
        run(login_and(u, "SELECT 1", capabilities, **kw))
    return info.value


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local() -> Upstream:
    try:
        socket.create_connection((MYSQL_HOST, MYSQL_PORT), timeout=3).close()
    except OSError as exc:
        pytest.skip(f"MariaDB/MySQL not reachable at {MYSQL_HOST}:{MYSQL_PORT}: {exc}")
    return up(MYSQL_HOST, MYSQL_PORT)


@pytest.fixture(scope="module")
def server() -> Iterator[MyCluster]:
    try:
        cluster = start_tls_cluster(["--plugin-load-add=auth_ed25519",
                                     "--plugin-load-add=auth_pam_v1",
                                     "--pam-use-cleartext-plugin=ON",
                                     "--performance-schema=ON"])
    except MyClusterError as exc:
        pytest.skip(f"throwaway MariaDB server not available: {exc}")
    try:
        cluster.sql("""
            CREATE USER wg_native@'%' IDENTIFIED BY 'native-pw';
            CREATE USER wg_ed@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw');
            CREATE USER wg_tls@'%' IDENTIFIED BY 'tls-pw' REQUIRE SSL;
            CREATE USER wg_pam@'%' IDENTIFIED VIA pam USING 'wiregate-test';
            CREATE USER wg_pam@'localhost' IDENTIFIED VIA pam USING 'wiregate-test';
            CREATE DATABASE wg;
            GRANT SELECT, EXECUTE ON wg.* TO wg_native@'%';
            GRANT SELECT ON performance_schema.* TO wg_native@'%';
        """)
        cluster.sql("DELIMITER //\nCREATE PROCEDURE wg.two() "
                    "BEGIN SELECT 1 AS a; SELECT 2 AS b, 3 AS c; END //")
        yield cluster
    finally:
        cluster.stop()


def tls_up(server: MyCluster, **kw: object) -> Upstream:
    base = up("127.0.0.1", server.port, "wg_native", "native-pw", "verify-full",
              tls_ca_file=str(server.directory / "ca.crt"))
    return replace(base, **kw)  # type: ignore[arg-type]


# -- the local MariaDB ---------------------------------------------------------------------------

@pytest.mark.mysql
def test_native_login_to_the_local_mariadb(local: Upstream) -> None:
    conn, results = run(login_and(local, "SELECT CONNECTION_ID(), DATABASE(), USER()",
                                  database="test"))
    assert "MariaDB" in conn.greeting.server_version
    (conn_id, database, user), = results[0]
    assert (conn_id, database) == (str(conn.connection_id).encode(), b"test")
    assert user is not None and user.startswith(b"root@")
    assert conn.status & 0x0002 and not conn.tls            # autocommit, plain TCP
    assert conn.auth_plugin == "mysql_native_password"
    need = (my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_PLUGIN_AUTH
            | my.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | my.CLIENT_CONNECT_WITH_DB | MULTI)
    assert conn.capabilities & need == need


@pytest.mark.mysql
def test_capabilities_are_what_both_sides_have_without_the_forbidden_ones(
        local: Upstream) -> None:
    """Asking for every bit: compression, LOCAL INFILE, query attributes, SSL and
    CONNECT_WITH_DB (no database) are not sent; MariaDB's extended bits are, with
    CLIENT_LONG_PASSWORD clear as MariaDB requires; queries still read (cached metadata,
    progress reports and session tracking in play)."""
    conn, results = run(login_and(local, "SELECT 1; SELECT REPEAT('x', 300000), NULL",
                                  capabilities=(1 << 64) - 1))
    caps = conn.capabilities
    for bit in (my.CLIENT_COMPRESS, my.CLIENT_LOCAL_FILES, my.CLIENT_QUERY_ATTRIBUTES,
                my.CLIENT_SSL, my.CLIENT_CONNECT_WITH_DB, my.CLIENT_LONG_PASSWORD, 1 << 26):
        assert not caps & bit, hex(bit)
    assert caps & ~conn.greeting.capabilities == 0
    assert caps & my.MARIADB_CLIENT_STMT_BULK_OPERATIONS and caps & my.CLIENT_DEPRECATE_EOF
    assert results == [[(b"1",)], [(b"x" * 300000, None)]]


@pytest.mark.mysql
@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_query_reads_every_result_set_in_both_eof_modes(local: Upstream,
                                                        deprecate_eof: bool) -> None:
    wanted = MULTI | (my.CLIENT_DEPRECATE_EOF if deprecate_eof else 0)

    async def go() -> None:
        conn = await connect(local, capabilities=wanted, database="test")
        try:
            assert bool(conn.capabilities & my.CLIENT_DEPRECATE_EOF) == deprecate_eof
            got = await query(conn, "SELECT 1 AS a, 'x' AS b; DO 1; SELECT NULL, '';"
                                    "SELECT 1 FROM DUAL WHERE 0; SET @wg = 5")
            assert got == [[(b"1", b"x")], [(None, b"")], []]
            assert await query(conn, "SELECT @wg") == [[(b"5",)]]
            # an error in the middle ends the answer; the connection stays usable
            with pytest.raises(MySQLUpstreamError) as info:
                await query(conn, "SELECT 1; SELECT * FROM wg_no_such_table; SELECT 3")
            err = info.value
            assert (err.errno, err.sqlstate, err.from_server) == (1146, "42S02", True)
            assert f"{MYSQL_HOST}:{MYSQL_PORT}" in str(err)
            assert await query(conn, "SELECT 4") == [[(b"4",)]]
        finally:
            await close(conn)

    run(go())


@pytest.mark.mysql
def test_a_row_of_exactly_one_full_packet(local: Upstream) -> None:
    """A payload of 16 MiB - 1 travels as a full packet and an empty one; a longer one as
    two packets."""
    n = 0xFFFFFF - 4                      # the value's length prefix is 4 bytes
    _, results = run(login_and(local, f"SELECT REPEAT('x', {n}); SELECT REPEAT('y', {n + 5})",
                               max_packet=32 * 1024 * 1024))
    assert [len(rows[0][0] or b"") for rows in results] == [n, n + 5]


@pytest.mark.mysql
def test_unknown_database_is_the_servers_error(local: Upstream) -> None:
    err = refused(local, database="wg_no_such_db")
    assert (err.errno, err.sqlstate, err.from_server) == (1049, "42000", True)
    assert f"{MYSQL_HOST}:{MYSQL_PORT}" in str(err) and "wg_no_such_db" in str(err)


@pytest.mark.mysql
def test_prefer_falls_back_to_plaintext_and_require_refuses_without_tls(
        local: Upstream) -> None:
    have = run(login_and(local, "SELECT @@have_ssl"))[1][0][0][0]
    if have == b"YES":
        pytest.skip("the local MariaDB has TLS configured; the fallback needs one without")
    conn, _ = run(login_and(replace(local, tls="prefer"), "SELECT 1"))
    assert not conn.tls and not conn.capabilities & my.CLIENT_SSL
    for mode in ("require", "verify-full"):
        err = refused(replace(local, tls=mode, tls_ca_file=None))
        assert err.errno == 2026 and f"{MYSQL_HOST}:{MYSQL_PORT}" in str(err)
        assert "does not support TLS" in str(err)


# -- failures before the server answers ------------------------------------------------------------

def test_unreachable_server_names_host_and_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]       # bound, not listening: refused
        err = refused(up("127.0.0.1", port))
    assert err.errno == 2003 and f"127.0.0.1:{port}" in str(err)


def test_a_silent_server_times_out() -> None:
    async def go() -> MySQLUpstreamError:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(MySQLUpstreamError) as info:
                await connect(up("127.0.0.1", port), capabilities=0, timeout=0.3)
            return info.value
        finally:
            server.close()

    err = run(go())
    assert err.errno == 2013 and "within 0.3 s" in str(err)


def test_an_unavailable_credential_is_not_described_to_the_client() -> None:
    u = replace(up("127.0.0.1", 1), password=Secret(env="WIREGATE_TEST_NO_SUCH_VARIABLE",
                                                    key="t.password"))

    async def go() -> MySQLUpstreamError:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            hello = my.HandshakeV10("8.0.0", 1, bytes(range(1, 21)),
                                    my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION
                                    | my.CLIENT_PLUGIN_AUTH)
            writer.write(encode(hello.encode(), 0))
            await reader.read()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(MySQLUpstreamError) as info:
                await connect(replace(u, port=port), capabilities=0, timeout=5)
            return info.value
        finally:
            server.close()

    err = run(go())
    assert err.errno == 1045 and "unavailable" in str(err)
    assert "WIREGATE_TEST_NO_SUCH_VARIABLE" not in str(err)


# -- the throwaway MariaDB: plugins ----------------------------------------------------------------

@pytest.mark.mysql
def test_native_password_user_and_a_wrong_password(server: MyCluster) -> None:
    u = up("127.0.0.1", server.port, "wg_native", "native-pw")
    conn, results = run(login_and(u, "SELECT CURRENT_USER(), DATABASE()", database="wg"))
    assert results == [[(b"wg_native@%", b"wg")]] and conn.auth_plugin == "mysql_native_password"
    err = refused(replace(u, password=Secret(value="wrong")))
    assert (err.errno, err.sqlstate, err.from_server) == (1045, "28000", True)
    assert f"127.0.0.1:{server.port}" in str(err) and "wg_native" in str(err)


@pytest.mark.mysql
def test_ed25519_user_over_an_auth_switch(server: MyCluster) -> None:
    u = up("127.0.0.1", server.port, "wg_ed", "ed-pw")
    conn, results = run(login_and(u, "SELECT CURRENT_USER()"))
    assert results == [[(b"wg_ed@%",)]] and conn.auth_plugin == "client_ed25519"
    err = refused(replace(u, password=Secret(value="ed-pw ")))
    assert (err.errno, err.from_server) == (1045, True)


@pytest.mark.mysql
def test_connection_attributes_pass_through(server: MyCluster) -> None:
    u = up("127.0.0.1", server.port, "wg_native", "native-pw")
    conn, results = run(login_and(
        u, "SELECT ATTR_NAME, ATTR_VALUE FROM performance_schema.session_connect_attrs "
           "WHERE PROCESSLIST_ID = CONNECTION_ID() ORDER BY ATTR_NAME",
        attributes={"_client_name": "libmariadb", "program_name": "mysql"}))
    attrs = {row[0]: row[1] for row in results[0]}
    assert attrs == {b"_client_name": b"libmariadb", b"program_name": b"mysql"}
    conn, results = run(login_and(
        u, "SELECT ATTR_VALUE FROM performance_schema.session_connect_attrs "
           "WHERE PROCESSLIST_ID = CONNECTION_ID() AND ATTR_NAME = 'program_name'"))
    assert results[0] == [(b"wiregate",)]     # named when the caller names nothing


@pytest.mark.mysql
def test_call_returns_every_result_set(server: MyCluster) -> None:
    u = up("127.0.0.1", server.port, "wg_native", "native-pw")
    for eof in (0, my.CLIENT_DEPRECATE_EOF):
        _, results = run(login_and(u, "CALL wg.two()", capabilities=MULTI | eof))
        assert results == [[(b"1",)], [(b"2", b"3")]]


@pytest.mark.mysql
def test_unix_socket_login(server: MyCluster) -> None:
    u = up(str(server.socket_path), 0, tls="require")   # the socket is never wrapped in TLS
    conn, results = run(login_and(u, "SELECT CURRENT_USER()"))
    assert results == [[(b"root@localhost",)]] and not conn.tls
    assert conn.server == str(server.socket_path)


@pytest.mark.mysql
def test_clear_password_only_over_tls_or_a_unix_socket(server: MyCluster) -> None:
    """An account IDENTIFIED VIA pam with pam_use_cleartext_plugin: the server switches to
    mysql_clear_password. In plain TCP Wiregate refuses before sending anything; over TLS and
    the Unix socket it sends the password and the server's PAM (no such service here) gives
    the answer, ER_ACCESS_DENIED: the refusal is the server's, not Wiregate's."""
    plain = up("127.0.0.1", server.port, "wg_pam", "pam-pw")
    err = refused(plain)
    assert err.errno == 2061 and not err.from_server
    assert "mysql_clear_password" in str(err) and f"127.0.0.1:{server.port}" in str(err)

    async def both() -> list[BaseException | None]:
        async def attempt(u: Upstream) -> BaseException | None:
            try:
                await login_and(u, "SELECT 1", 0)
            except MySQLUpstreamError as exc:
                return exc
            return None
        return list(await asyncio.gather(
            attempt(tls_up(server, user="wg_pam", password=Secret(value="pam-pw"))),
            attempt(up(str(server.socket_path), 0, "wg_pam", "pam-pw"))))

    for exc in run(both()):
        assert isinstance(exc, MySQLUpstreamError), exc
        assert (exc.errno, exc.from_server) == (1045, True), exc
        assert "(mysql_clear_password)" in str(exc)     # refused after the switch


# -- the throwaway MariaDB: TLS --------------------------------------------------------------------

def _cipher(conn: MySQLUpstreamConnection, results: list[list[tuple[bytes | None, ...]]],
            ) -> bytes:
    assert conn.tls and conn.capabilities & my.CLIENT_SSL
    value = results[0][0][1]
    assert value is not None
    return value


@pytest.mark.mysql
@pytest.mark.parametrize("mode", ["require", "verify-full", "prefer"])
def test_tls_modes_encrypt(server: MyCluster, mode: str) -> None:
    u = tls_up(server, tls=mode, tls_ca_file=None if mode != "verify-full"
               else str(server.directory / "ca.crt"))
    conn, results = run(login_and(u, "SHOW SESSION STATUS LIKE 'Ssl_cipher'"))
    assert _cipher(conn, results)


@pytest.mark.mysql
def test_verify_full_with_the_server_name_and_a_require_ssl_account(server: MyCluster) -> None:
    u = tls_up(server, host="127.0.0.1", tls_server_name="localhost", user="wg_tls",
               password=Secret(value="tls-pw"))
    conn, results = run(login_and(u, "SHOW SESSION STATUS LIKE 'Ssl_cipher'"))
    assert _cipher(conn, results)
    err = refused(replace(u, tls="disable"))      # REQUIRE SSL: the server refuses plaintext
    assert (err.errno, err.from_server) == (1045, True)


@pytest.mark.mysql
def test_verify_full_refuses_a_wrong_ca_and_a_wrong_name(server: MyCluster,
                                                        tmp_path: Path) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_bytes(generate_ca("Some other CA")[0])
    err = refused(tls_up(server, tls_ca_file=str(other)))
    assert err.errno == 2026 and "certificate verify failed" in str(err)
    assert f"127.0.0.1:{server.port}" in str(err)
    err = refused(tls_up(server, tls_server_name="db.example.com"))
    assert err.errno == 2026 and "db.example.com" in str(err)


@pytest.mark.mysql
def test_disable_stays_plaintext_on_a_tls_server(server: MyCluster) -> None:
    conn, results = run(login_and(tls_up(server, tls="disable"),
                                  "SHOW SESSION STATUS LIKE 'Ssl_cipher'"))
    assert not conn.tls and results == [[(b"Ssl_cipher", b"")]]


# -- caching_sha2_password (scripted MySQL 8 login) ------------------------------------------------

class Sha2Server:
    """The server half of a MySQL 8 caching_sha2_password login, from the codec: greeting,
    optional switch, fast path or full authentication (RSA public key, or the password
    itself on a Unix socket). The packet reader enforces the client's sequence ids."""

    def __init__(self, password: bytes, *, full: bool, greeting_plugin: str) -> None:
        self.password, self.full, self.greeting_plugin = password, full, greeting_plugin
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.seen: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        packets = PacketReader(expect=1)
        seq = 0

        async def read() -> bytes:
            nonlocal seq
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the client closed the connection")
                got = packets.feed(data)
                if got:
                    seq = packets.expect or 0
                    return got[0].payload

        def send(payload: bytes) -> None:
            nonlocal seq
            writer.write(encode(payload, seq))
            seq += 1
            packets.reset(seq)

        try:
            nonce = bytes(range(65, 85))
            send(my.HandshakeV10("8.0.36", 42, nonce, my.CLIENT_PROTOCOL_41
                                 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_PLUGIN_AUTH
                                 | my.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
                                 | my.CLIENT_DEPRECATE_EOF | my.CLIENT_LONG_PASSWORD,
                                 auth_plugin=self.greeting_plugin).encode())
            resp = my.HandshakeResponse41.decode(await read())
            token = resp.auth_response
            if resp.auth_plugin != "caching_sha2_password":
                self.seen.append("switch")
                send(b"\xfecaching_sha2_password\0" + nonce + b"\0")
                token = await read()
            if not auth.sha2_verify(token, nonce, auth.sha2_stored(self.password)):
                send(my.ERR(1045, "Access denied", "28000").encode())
                return
            if not self.full:
                send(b"\x01\x03")
            else:
                send(b"\x01\x04")
                answer = await read()
                if answer == b"\x02":
                    pem = self.key.public_key().public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo)
                    send(b"\x01" + pem)
                    plain = self.key.decrypt(await read(), padding.OAEP(
                        mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
                    answer = bytes(b ^ nonce[i % 20] for i, b in enumerate(plain))
                    self.seen.append("rsa")
                else:
                    self.seen.append("clear")
                if answer != self.password + b"\0":
                    send(my.ERR(1045, "Access denied", "28000").encode())
                    return
            send(my.OK(status=2).encode())
            self.seen.append("ok")
            packets.reset(0)
            seq = 0
            cmd = await read()                  # a command starts a new sequence at 0
            assert cmd == my.query("SELECT 1"), cmd
            self.seen.append("query")
            send(my.OK(status=2).encode())
            await reader.read()
        except Exception as exc:  # noqa: BLE001 - reported through ``seen``
            self.seen.append(f"error: {exc!r}")
        finally:
            writer.close()


def _sha2_login(server: Sha2Server, password: str, unix: Path | None = None) -> list[str]:
    async def go() -> list[str]:
        if unix is not None:
            srv = await asyncio.start_unix_server(server.handle, str(unix))
            target = up(str(unix), 0, "u", password)
        else:
            srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
            target = up("127.0.0.1", srv.sockets[0].getsockname()[1], "u", password)
        try:
            conn = await connect(target, capabilities=my.CLIENT_DEPRECATE_EOF, timeout=10)
            assert conn.auth_plugin == "caching_sha2_password" and conn.connection_id == 42
            assert await query(conn, "SELECT 1") == []
            await close(conn)
        finally:
            srv.close()
        return server.seen

    return run(go())


@pytest.mark.parametrize("greeting_plugin", ["caching_sha2_password", "mysql_native_password"])
def test_caching_sha2_fast_path(greeting_plugin: str) -> None:
    seen = _sha2_login(Sha2Server(b"s3cret", full=False, greeting_plugin=greeting_plugin),
                       "s3cret")
    switched = ["switch"] if greeting_plugin != "caching_sha2_password" else []
    assert seen == [*switched, "ok", "query"]


def test_caching_sha2_full_authentication_with_the_servers_rsa_key() -> None:
    seen = _sha2_login(Sha2Server(b"s3cret", full=True,
                                  greeting_plugin="caching_sha2_password"), "s3cret")
    assert seen == ["rsa", "ok", "query"]


def test_caching_sha2_full_authentication_on_a_unix_socket_sends_the_password(
        tmp_path: Path) -> None:
    seen = _sha2_login(Sha2Server(b"s3cret", full=True,
                                  greeting_plugin="caching_sha2_password"), "s3cret",
                       unix=tmp_path / "my.sock")
    assert seen == ["clear", "ok", "query"]


def test_caching_sha2_wrong_password() -> None:
    server = Sha2Server(b"s3cret", full=False, greeting_plugin="caching_sha2_password")
    with pytest.raises(MySQLUpstreamError) as info:
        _sha2_login(server, "wrong")
    assert (info.value.errno, info.value.from_server) == (1045, True)

