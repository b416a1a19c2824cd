"""Connecting to an upstream PostgreSQL server with credentials Wiregate holds.

TLS is negotiated the way libpq does (SSLRequest, then a handshake), with the modes
``disable | prefer | require | verify-full``. Authentication trust, cleartext, MD5 and
SCRAM-SHA-256 are supported; anything else fails with a message naming the method.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from dataclasses import dataclass, field

from protocols.postgres import messages as m
from protocols.postgres.scram import MECHANISM, ScramClient, ScramError, md5_password
from proxy.config import ConfigError, Upstream

_HDR = struct.Struct("!ci")
log = logging.getLogger("wiregate.upstream")
MAX_AUTH_MESSAGE = 64 * 1024


class UpstreamError(Exception):
    """Could not connect or log in upstream. ``sqlstate`` is what the client is told."""

    def __init__(self, message: str, sqlstate: str = "08006",
                 server_fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.server_fields = server_fields


@dataclass
class UpstreamConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parameters: dict[str, str] = field(default_factory=dict)
    parameter_order: list[str] = field(default_factory=list)
    process_id: int = 0
    secret_key: int = 0
    transaction_status: str = "I"
    tls: bool = False


def client_tls_context(up: Upstream) -> ssl.SSLContext | None:
    if up.tls == "disable":
        return None
    if up.tls == "verify-full":
        ctx = ssl.create_default_context(cafile=up.tls_ca_file)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        # prefer/require encrypt without verifying, exactly as libpq's sslmode of that name
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if up.tls_ca_file:
            ctx.load_verify_locations(up.tls_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def set_keepalive(sock: socket.socket | None, idle: int, interval: int, count: int) -> None:
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


async def open_raw(up: Upstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
    """Open the socket and negotiate TLS; returns (reader, writer, tls_in_use)."""
    try:
        if up.is_unix:
            reader, writer = await asyncio.open_unix_connection(up.unix_path, limit=1 << 20)
        else:
            reader, writer = await asyncio.open_connection(up.host, up.port, limit=1 << 20)
    except OSError as exc:
        where = up.unix_path if up.is_unix else f"{up.host}:{up.port}"
        raise UpstreamError(f"could not connect to upstream server at {where}: "
                            f"{exc.strerror or exc}") from exc
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = None if up.is_unix else client_tls_context(up)
    if ctx is None:
        return reader, writer, False
    writer.write(m.SSLRequest().encode())
    try:
        answer = await reader.readexactly(1)
    except (asyncio.IncompleteReadError, OSError) as exc:
        writer.close()
        raise UpstreamError("upstream closed the connection during TLS negotiation") from exc
    if answer == b"S":
        try:
            await writer.start_tls(ctx, server_hostname=up.tls_server_name or up.host)
        except (ssl.SSLError, OSError) as exc:
            writer.close()
            raise UpstreamError(f"TLS handshake with upstream {up.host}:{up.port} failed: "
                                f"{exc}") from exc
        return reader, writer, True
    if answer != b"N":
        writer.close()
        raise UpstreamError("upstream answered SSLRequest with neither S nor N", "08P01")
    if up.tls in ("require", "verify-full"):
        writer.close()
        raise UpstreamError(f"upstream {up.host}:{up.port} does not support TLS and "
                            f"tls = \"{up.tls}\"")
    return reader, writer, False


async def read_message(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bytes]:
    hdr = await reader.readexactly(5)
    code, length = _HDR.unpack(hdr)
    if length < 4 or length - 4 > limit:
        raise UpstreamError(f"upstream sent a message of invalid length {length}", "08P01")
    return code, await reader.readexactly(length - 4)


async def connect(up: Upstream, client_params: dict[str, str]) -> UpstreamConnection:
    """Connect, log in and read up to the first ReadyForQuery."""
    reader, writer, tls = await open_raw(up)
    try:
        return await _login(up, client_params, reader, writer, tls)
    except BaseException:
        writer.close()
        raise


async def _login(up: Upstream, client_params: dict[str, str], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, tls: bool) -> UpstreamConnection:
    params = {k: v for k, v in client_params.items() if k not in ("user", "database")}
    params = {"user": up.user, "database": up.dbname, **params}
    writer.write(m.StartupMessage(params).encode())
    conn = UpstreamConnection(reader, writer, tls=tls)
    scram: ScramClient | None = None
    try:
        while True:
            code, body = await read_message(reader, MAX_AUTH_MESSAGE)
            if code == b"R":
                auth = m.decode_backend(code, body)
                assert isinstance(auth, m.Authentication)
                if auth.kind == m.AUTH_OK:
                    continue
                try:
                    password = up.password.resolve()
                except ConfigError as exc:
                    # The detail (a file path, a variable name) goes to the log, not the client.
                    log.error("upstream credential unavailable", extra={"error": str(exc)})
                    raise UpstreamError("the upstream credential is unavailable; see the "
                                        "Wiregate log", "08006") from None
                if auth.kind == m.AUTH_CLEARTEXT:
                    writer.write(m.PasswordMessage(m.cstr(password)).encode())
                elif auth.kind == m.AUTH_MD5:
                    writer.write(m.PasswordMessage(
                        m.cstr(md5_password(up.user, password, auth.payload[:4]))).encode())
                elif auth.kind == m.AUTH_SASL:
                    if MECHANISM not in auth.mechanisms:
                        raise UpstreamError(
                            "upstream offers SASL mechanisms "
                            f"{', '.join(auth.mechanisms)}; Wiregate supports {MECHANISM}",
                            "28000")
                    scram = ScramClient(password)
                    writer.write(m.SASLInitialResponse(MECHANISM, scram.first()).encode())
                elif auth.kind == m.AUTH_SASL_CONTINUE and scram is not None:
                    writer.write(m.SASLResponse(scram.final(auth.payload)).encode())
                elif auth.kind == m.AUTH_SASL_FINAL and scram is not None:
                    scram.verify(auth.payload)
                else:
                    raise UpstreamError(
                        f"upstream asks for authentication method {auth.kind}, which Wiregate "
                        "does not support (trust, password, md5, scram-sha-256 are)", "28000")
            elif code == b"S":
                ps = m.decode_backend(code, body)
                assert isinstance(ps, m.ParameterStatus)
                if ps.name not in conn.parameters:
                    conn.parameter_order.append(ps.name)
                conn.parameters[ps.name] = ps.value
            elif code == b"K":
                key = m.decode_backend(code, body)
                assert isinstance(key, m.BackendKeyData)
                conn.process_id, conn.secret_key = key.process_id, key.secret_key
            elif code == b"Z":
                conn.transaction_status = chr(body[0]) if body else "I"
                return conn
            elif code == b"E":
                err = m.decode_backend(code, body)
                assert isinstance(err, m.ErrorResponse)
                raise UpstreamError(f"upstream refused the login: {err.message}",
                                    err.sqlstate or "08006", err.fields)
            elif code in (b"N", b"v"):
                continue
            else:
                raise UpstreamError(f"unexpected message {code!r} from upstream during login",
                                    "08P01")
    except ScramError as exc:
        raise UpstreamError(f"upstream SCRAM login failed: {exc}", "28000") from exc
    except asyncio.IncompleteReadError as exc:
        raise UpstreamError("upstream closed the connection during login") from exc
    except m.ProtocolViolation as exc:
        raise UpstreamError(f"upstream sent invalid data during login: {exc}", "08P01") from exc


async def send_cancel(up: Upstream, process_id: int, secret_key: int, use_tls: bool) -> None:
    """Forward a cancel to the upstream backend, over TLS when the session used it."""
    if up.is_unix:
        _, writer = await asyncio.open_unix_connection(up.unix_path)
    elif use_tls:
        _, writer, _ = await open_raw(up)
    else:
        _, writer = await asyncio.open_connection(up.host, up.port)
    try:
        writer.write(m.CancelRequest(process_id, secret_key).encode())
        await writer.drain()
    finally:
        writer.close()
