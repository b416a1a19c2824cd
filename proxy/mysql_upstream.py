"""Connecting to an upstream MySQL/MariaDB server with credentials Wiregate holds.

The MySQL counterpart of ``proxy/upstream.py``: Wiregate logs in with the user and password of
its configuration (never a client's), negotiating what the caller's client asked for as far as
the server offers it.

TLS follows the PostgreSQL modes ``disable | prefer | require | verify-full``: an SSLRequest
after the greeting when the server offers CLIENT_SSL, then the handshake. A Unix socket (an
``Upstream.host`` starting with "/", the socket file itself) is never wrapped in TLS; it is
local, and counts as a secure transport for the plugins that send the password itself.

Authentication plugins: mysql_native_password, caching_sha2_password (fast path; full
authentication by cleartext over TLS or a Unix socket, otherwise RSA-OAEP with the server's
public key), MariaDB's client_ed25519, and mysql_clear_password over TLS or a Unix socket
only. AuthSwitchRequest and AuthMoreData are followed; every failure is a MySQLUpstreamError
naming the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from protocols.mysql import auth
from protocols.mysql import messages as my
from protocols.mysql.packets import PacketError, PacketReader, encode, next_seq
from proxy.config import ConfigError, Upstream
from proxy.upstream import client_tls_context

log = logging.getLogger("wiregate.mysql_upstream")

# Error numbers for failures that are not the server's own ERR: the client library's (CR_*),
# which is what a MySQL client shows for the same failure.
CR_CONN_HOST_ERROR = 2003        # cannot connect
CR_SERVER_LOST = 2013            # connection lost / no answer in time
CR_SSL_CONNECTION_ERROR = 2026   # TLS refused or failed
CR_MALFORMED_PACKET = 2027       # the server sent something that is not MySQL protocol
CR_AUTH_PLUGIN_CANNOT_LOAD = 2059  # the server asks for a plugin Wiregate does not speak
CR_AUTH_PLUGIN_ERR = 2061        # a plugin step failed (clear text refused, bad RSA key)
ER_ACCESS_DENIED_ERROR = 1045

# Bits Wiregate needs itself, and bits it never asks for: compression would hide the
# statements from the guardrails, LOCAL INFILE lets the server read the proxy's files, and
# query attributes are not offered to clients.
_NEEDED = (my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_PLUGIN_AUTH
           | my.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25   # MySQL 8: a "metadata follows" byte
CLIENT_ZSTD_COMPRESSION_ALGORITHM = 1 << 26
_NEVER = (my.CLIENT_COMPRESS | CLIENT_ZSTD_COMPRESSION_ALGORITHM | my.CLIENT_LOCAL_FILES
          | my.CLIENT_QUERY_ATTRIBUTES | my.CLIENT_SSL | my.CLIENT_CONNECT_WITH_DB
          | my.CLIENT_CONNECT_ATTRS)

PROGRAM_NAME = "wiregate"
MAX_LOGIN_PACKET = 64 * 1024     # greeting, auth exchanges, an RSA key: all far smaller
_MAX_AUTH_ROUNDS = 8             # switch / more-data exchanges before giving up
_SCRAMBLE = 20                   # nonce length of native and caching_sha2
_ED25519_NONCE = 32

_PLUGINS = ("mysql_native_password", "caching_sha2_password", "client_ed25519",
            "mysql_clear_password")


class MySQLUpstreamError(Exception):
    """Could not connect, log in or run a query upstream.

    ``errno`` and ``sqlstate`` are the server's when it answered with an ERR packet
    (``from_server`` is then True); otherwise a client-library error number (2003 cannot
    connect, 2013 connection lost or timed out, 2026 TLS, 2027 malformed packet, 2059/2061
    authentication plugin) with SQLSTATE 08S01 or 28000."""

    def __init__(self, message: str, errno: int = CR_SERVER_LOST, sqlstate: str = "08S01",
                 from_server: bool = False) -> None:
        super().__init__(message)
        self.errno = errno
        self.sqlstate = sqlstate
        self.from_server = from_server


@dataclass
class MySQLUpstreamConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    greeting: my.HandshakeV10     # the server's greeting as received
    capabilities: int             # the flags sent in the handshake response (64-bit)
    connection_id: int            # the server's thread id, for KILL
    tls: bool
    status: int                   # server status flags of the final OK
    server: str = ""              # "host:port" or the socket path, for messages
    max_packet: int = 64 * 1024 * 1024
    auth_plugin: str = ""         # the plugin the login finished with


def server_name(up: Upstream) -> str:
    """How the upstream is named in messages: host:port, or the Unix socket path."""
    return up.host if up.is_unix else f"{up.host}:{up.port}"


def negotiate(wanted: int, server_caps: int, *, database: bool, attributes: bool) -> int:
    """The capability flags to send: what the caller wants and the server offers, plus what
    Wiregate needs; never compression (zlib or zstd), LOCAL INFILE or query attributes.
    (CLIENT_SSL is added by the TLS step.)

    MariaDB reads its extended capabilities (above bit 32) only when CLIENT_LONG_PASSWORD
    (its "CLIENT_MYSQL") is clear, which is what a MariaDB greeting shows; ``wanted &
    server_caps`` keeps that consistent."""
    caps = wanted & server_caps & ~_NEVER
    caps |= _NEEDED & server_caps
    if database:
        caps |= my.CLIENT_CONNECT_WITH_DB & server_caps
    if attributes:
        caps |= my.CLIENT_CONNECT_ATTRS & server_caps
    if caps >> 32:
        caps &= ~my.CLIENT_LONG_PASSWORD
    return caps


class _Packets:
    """Whole payloads from the stream, one at a time, with the sequence checked; reads
    exactly what a packet holds, so nothing is buffered past it (the stream can be handed to
    TLS or to a relay at any packet boundary)."""

    def __init__(self, reader: asyncio.StreamReader, max_payload: int, expect: int) -> None:
        self.reader = reader
        self.packets = PacketReader(max_payload, expect)

    @property
    def seq(self) -> int:
        """The sequence id of the next packet in this exchange (ours or the server's)."""
        return self.packets.expect or 0

    async def read(self) -> bytes:
        while True:
            header = await self.reader.readexactly(4)
            got = self.packets.feed(header)   # sequence and size checked before the body
            length = int.from_bytes(header[:3], "little")
            if length:
                got = self.packets.feed(await self.reader.readexactly(length))
            if got:
                return got[0].payload

    def write(self, writer: asyncio.StreamWriter, payload: bytes) -> None:
        seq = self.seq
        writer.write(encode(payload, seq))
        self.packets.reset(next_seq(payload, seq))


def _server_error(where: str, payload: bytes, doing: str) -> MySQLUpstreamError:
    err = my.ERR.decode(payload)
    return MySQLUpstreamError(f"upstream {where} {doing}: {err.message} (errno {err.errno}, "
                              f"SQLSTATE {err.sqlstate})", err.errno, err.sqlstate, True)


async def _open(up: Upstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        if up.is_unix:
            return await asyncio.open_unix_connection(up.host, limit=1 << 20)
        reader, writer = await asyncio.open_connection(up.host, up.port, limit=1 << 20)
    except OSError as exc:
        raise MySQLUpstreamError(f"could not connect to upstream MySQL server at "
                                 f"{server_name(up)}: {exc.strerror or exc}",
                                 CR_CONN_HOST_ERROR) from exc
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def connect(up: Upstream, *, capabilities: int, database: str | None = None,
                  attributes: Mapping[str, str] | None = None, charset: int = 45,
                  max_packet: int = 64 * 1024 * 1024,
                  timeout: float = 10.0) -> MySQLUpstreamConnection:
    """Connect to ``up`` and log in as its configured user, up to the final OK.

    ``capabilities`` is what the caller wants (its client's flags); the flags actually sent
    are in the result. ``attributes`` are sent as connection attributes with
    ``program_name=wiregate`` unless they name a program themselves. Every failure,
    including no answer within ``timeout`` seconds, is a MySQLUpstreamError."""
    if not 0 < charset < 256:
        raise ValueError(f"charset must be a collation id 1-255, got {charset}")
    where = server_name(up)
    try:
        return await asyncio.wait_for(
            _connect(up, capabilities, database, attributes, charset, max_packet), timeout)
    except TimeoutError as exc:
        raise MySQLUpstreamError(f"upstream {where} did not complete the login within "
                                 f"{timeout:g} s", CR_SERVER_LOST) from exc


async def _connect(up: Upstream, wanted: int, database: str | None,
                   attributes: Mapping[str, str] | None, charset: int,
                   max_packet: int) -> MySQLUpstreamConnection:
    reader, writer = await _open(up)
    try:
        return await _login(up, reader, writer, wanted, database, attributes, charset,
                            max_packet)
    except BaseException:
        writer.close()
        raise


async def _login(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 wanted: int, database: str | None, attributes: Mapping[str, str] | None,
                 charset: int, max_packet: int) -> MySQLUpstreamConnection:
    where = server_name(up)
    stream = _Packets(reader, min(max_packet, MAX_LOGIN_PACKET), 0)
    try:
        first = await stream.read()
        if first[:1] == b"\xff":        # refused before the handshake (host blocked, too many)
            raise _server_error(where, first, "refused the connection")
        greeting = my.HandshakeV10.decode(first)
        server_caps = greeting.capabilities
        if not server_caps & my.CLIENT_PROTOCOL_41 or \
                not server_caps & my.CLIENT_SECURE_CONNECTION:
            raise MySQLUpstreamError(f"upstream {where} ({greeting.server_version}) does not "
                                     "speak protocol 4.1 with secure connection",
                                     CR_MALFORMED_PACKET)
        attrs = {"program_name": PROGRAM_NAME, **(attributes or {})}
        caps = negotiate(wanted, server_caps, database=database is not None, attributes=True)
        if database is not None and not caps & my.CLIENT_CONNECT_WITH_DB:
            raise MySQLUpstreamError(f"upstream {where} cannot select a database at login",
                                     CR_MALFORMED_PACKET)
        tls = await _start_tls(up, stream, writer, greeting, caps, max_packet, charset)
        if tls:
            caps |= my.CLIENT_SSL
        password = _password(up)
        plugin = greeting.auth_plugin
        if plugin not in ("mysql_native_password", "caching_sha2_password"):
            # Anything else needs a nonce the greeting does not carry (ed25519) or must not be
            # sent before the server asks (clear text): start with native, the server switches.
            plugin = "mysql_native_password"
        nonce = greeting.auth_data
        response = my.HandshakeResponse41(
            caps, up.user, _scramble(plugin, password, nonce), database, plugin,
            attrs if caps & my.CLIENT_CONNECT_ATTRS else {}, max_packet, charset)
        stream.write(writer, response.encode())
        await writer.drain()
        status, plugin = await _authenticate(up, stream, writer, plugin, nonce, password, tls)
    except asyncio.IncompleteReadError as exc:
        raise MySQLUpstreamError(f"upstream {where} closed the connection during login",
                                 CR_SERVER_LOST) from exc
    except PacketError as exc:
        raise MySQLUpstreamError(f"upstream {where} sent invalid data during login: {exc}",
                                 CR_MALFORMED_PACKET) from exc
    except (ssl.SSLError, OSError) as exc:
        raise MySQLUpstreamError(f"connection to upstream {where} failed during login: "
                                 f"{exc}", CR_SERVER_LOST) from exc
    return MySQLUpstreamConnection(reader, writer, greeting, caps, greeting.connection_id, tls,
                                   status, where, max_packet, plugin)


async def _start_tls(up: Upstream, stream: _Packets, writer: asyncio.StreamWriter,
                     greeting: my.HandshakeV10, caps: int, max_packet: int,
                     charset: int) -> bool:
    """Negotiate TLS as ``up.tls`` says; True when the connection is now encrypted."""
    where = server_name(up)
    ctx = None if up.is_unix else client_tls_context(up)
    if ctx is None:
        return False
    if not greeting.capabilities & my.CLIENT_SSL:
        if up.tls in ("require", "verify-full"):
            raise MySQLUpstreamError(f"upstream {where} does not support TLS and "
                                     f"tls = \"{up.tls}\"", CR_SSL_CONNECTION_ERROR)
        return False
    stream.write(writer, my.ssl_request(caps | my.CLIENT_SSL, max_packet, charset))
    await writer.drain()
    try:
        await writer.start_tls(ctx, server_hostname=up.tls_server_name or up.host)
    except (ssl.SSLError, OSError) as exc:
        raise MySQLUpstreamError(f"TLS handshake with upstream {where} failed: {exc}",
                                 CR_SSL_CONNECTION_ERROR) from exc
    return True


def _password(up: Upstream) -> bytes:
    try:
        return up.password.resolve().encode()
    except ConfigError as exc:
        # The detail (a file path, a variable name) goes to the log, not to a client.
        log.error("upstream credential unavailable", extra={"error": str(exc)})
        raise MySQLUpstreamError(f"the credential for upstream {server_name(up)} is "
                                 "unavailable; see the Wiregate log", ER_ACCESS_DENIED_ERROR,
                                 "28000") from None


def _scramble(plugin: str, password: bytes, nonce: bytes) -> bytes:
    """The first answer of ``plugin`` to ``nonce`` (native and caching_sha2 only)."""
    if plugin == "caching_sha2_password":
        return auth.sha2_scramble(password, nonce[:_SCRAMBLE])
    return my.native_password(password, nonce[:_SCRAMBLE])


async def _authenticate(up: Upstream, stream: _Packets, writer: asyncio.StreamWriter,
                        plugin: str, nonce: bytes, password: bytes,
                        tls: bool) -> tuple[int, str]:
    """Follow the server from the handshake response to OK; (status flags, final plugin)."""
    where = server_name(up)
    secure = tls or up.is_unix
    awaiting_key = False
    for _ in range(_MAX_AUTH_ROUNDS):
        packet = await stream.read()
        head = packet[:1]
        if head == b"\x00":
            return my.OK.decode(packet).status, plugin
        if head == b"\xff":
            raise _server_error(where, packet, f"refused the login of {up.user!r} "
                                               f"({plugin})")
        if head == b"\xfe":               # AuthSwitchRequest: plugin name, then its data
            if len(packet) == 1:
                raise MySQLUpstreamError(
                    f"upstream {where} asks for the pre-4.1 password protocol "
                    "(mysql_old_password), which Wiregate does not support",
                    CR_AUTH_PLUGIN_CANNOT_LOAD, "28000")
            name, _, data = packet[1:].partition(b"\0")
            plugin = name.decode("ascii", "replace")
            awaiting_key = False
            if plugin == "client_ed25519":
                nonce = data[:_ED25519_NONCE]
                answer = auth.ed25519_sign(password, nonce)
            elif plugin in ("mysql_native_password", "caching_sha2_password"):
                nonce = data[:_SCRAMBLE]
                answer = _scramble(plugin, password, nonce)
            elif plugin == "mysql_clear_password":
                if not secure:
                    raise MySQLUpstreamError(
                        f"upstream {where} asks for mysql_clear_password, which would send "
                        "the password unencrypted; Wiregate sends it only over TLS or a Unix "
                        "socket (set tls = \"require\" or \"verify-full\")",
                        CR_AUTH_PLUGIN_ERR, "28000")
                answer = password + b"\0"
            else:
                raise MySQLUpstreamError(
                    f"upstream {where} asks for authentication plugin {plugin!r}, which "
                    f"Wiregate does not support ({', '.join(_PLUGINS)} are)",
                    CR_AUTH_PLUGIN_CANNOT_LOAD, "28000")
        elif head == b"\x01" and plugin == "caching_sha2_password":   # AuthMoreData
            data = packet[1:]
            if awaiting_key:                  # the server's RSA public key (PEM)
                try:
                    answer = auth.sha2_rsa_password(password, nonce, data)
                except ValueError as exc:
                    raise MySQLUpstreamError(f"upstream {where} sent an unusable RSA public "
                                             f"key: {exc}", CR_AUTH_PLUGIN_ERR,
                                             "28000") from exc
                awaiting_key = False
            elif data == b"\x03":             # fast authentication succeeded: OK follows
                continue
            elif data == b"\x04":             # full authentication: the password itself
                if secure:
                    answer = password + b"\0"
                else:
                    answer = b"\x02"          # ask for the public key, encrypt with it
                    awaiting_key = True
            else:
                raise MySQLUpstreamError(f"upstream {where} sent unexpected "
                                         "caching_sha2_password data", CR_MALFORMED_PACKET)
        else:
            raise MySQLUpstreamError(f"upstream {where} sent an unexpected packet "
                                     f"(0x{packet[:1].hex() or 'empty'}) during the login "
                                     f"with {plugin}", CR_MALFORMED_PACKET)
        stream.write(writer, answer)
        await writer.drain()
    raise MySQLUpstreamError(f"upstream {where} did not finish the login after "
                             f"{_MAX_AUTH_ROUNDS} exchanges", CR_MALFORMED_PACKET, "28000")


# -- commands ------------------------------------------------------------------------------------

Row = tuple[bytes | None, ...]


def _terminator(payload: bytes, deprecate_eof: bool) -> bool:
    """The end of a result set's rows: EOF (0xFE, < 9 bytes), or with CLIENT_DEPRECATE_EOF an
    OK packet with the 0xFE header (a row starting 0xFE has a first value of 16 MiB or more,
    so its payload is longer than one packet)."""
    if payload[:1] != b"\xfe":
        return False
    return len(payload) < 0xFFFFFF if deprecate_eof else my.is_eof(payload)


def _end_status(payload: bytes, deprecate_eof: bool) -> int:
    if deprecate_eof:
        return my.OK.decode(payload).status
    return struct.unpack_from("<H", payload, 3)[0] if len(payload) >= 5 else 0


async def query(conn: MySQLUpstreamConnection, sql: str) -> list[list[Row]]:
    """Run ``sql`` as one COM_QUERY (text protocol) and return the rows of every result set,
    in order (a statement answered with OK contributes none; an empty result set is []).

    All results of a multi-statement or CALL answer are read (SERVER_MORE_RESULTS_EXISTS),
    in the EOF mode the login negotiated. An ERR at any point is a MySQLUpstreamError with
    the server's errno and SQLSTATE; the connection can still be used after it. Any other
    failure, or a cancellation, leaves the answer half read: close the connection then."""
    caps = conn.capabilities
    deprecate_eof = bool(caps & my.CLIENT_DEPRECATE_EOF)
    cached_metadata = bool(caps & (my.MARIADB_CLIENT_CACHE_METADATA
                                   | CLIENT_OPTIONAL_RESULTSET_METADATA))
    progress = bool(caps & my.MARIADB_CLIENT_PROGRESS)
    stream = _Packets(conn.reader, conn.max_packet, 0)
    results: list[list[Row]] = []
    try:
        stream.write(conn.writer, my.query(sql))
        await conn.writer.drain()
        while True:
            packet = await stream.read()
            head = packet[:1]
            if head == b"\xff":
                if progress and packet[1:3] == b"\xff\xff":   # MariaDB progress report
                    continue
                raise _server_error(conn.server, packet, "refused a query")
            if head == b"\x00":
                status = my.OK.decode(packet).status
            elif head == b"\xfb":
                raise MySQLUpstreamError(f"upstream {conn.server} asked for a LOCAL INFILE "
                                         "that Wiregate never allows", CR_MALFORMED_PACKET)
            else:
                rows, status = await _result_set(stream, packet, deprecate_eof,
                                                 cached_metadata, progress, conn.server)
                results.append(rows)
            if not status & my.SERVER_MORE_RESULTS_EXISTS:
                return results
    except asyncio.IncompleteReadError as exc:
        raise MySQLUpstreamError(f"upstream {conn.server} closed the connection during a "
                                 "query", CR_SERVER_LOST) from exc
    except PacketError as exc:
        raise MySQLUpstreamError(f"upstream {conn.server} sent invalid data: {exc}",
                                 CR_MALFORMED_PACKET) from exc
    except OSError as exc:
        raise MySQLUpstreamError(f"connection to upstream {conn.server} failed: {exc}",
                                 CR_SERVER_LOST) from exc


async def _result_set(stream: _Packets, first: bytes, deprecate_eof: bool,
                      cached_metadata: bool, progress: bool,
                      where: str) -> tuple[list[Row], int]:
    r = my.Reader(first, "column count")
    count = r.lenenc_int()
    if not count:
        raise PacketError("column count: zero or NULL")
    metadata = True
    if cached_metadata:
        metadata = r.uint(1) == 1
    if metadata:
        for _ in range(count):
            await stream.read()               # column definitions: only the count matters
        if not deprecate_eof and not my.is_eof(await stream.read()):
            raise PacketError("no EOF after the column definitions")
    rows: list[Row] = []
    while True:
        packet = await stream.read()
        if packet[:1] == b"\xff":
            if progress and packet[1:3] == b"\xff\xff":
                continue
            raise _server_error(where, packet, "failed a query")
        if _terminator(packet, deprecate_eof):
            return rows, _end_status(packet, deprecate_eof)
        rows.append(my.text_row(packet, count))


async def close(conn: MySQLUpstreamConnection) -> None:
    """Say COM_QUIT and close; never raises."""
    with contextlib.suppress(Exception):
        conn.writer.write(encode(bytes([my.COM_QUIT]), 0))
    conn.writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.writer.wait_closed(), 1.0)
