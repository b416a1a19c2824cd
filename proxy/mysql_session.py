"""One MySQL/MariaDB client session: greeting, TLS, the client's login, the upstream login
with Wiregate's own credentials, then the relay.

The client proves a password Wiregate holds only in stored forms (``mysql_native_password``,
``caching_sha2_password``, ``client_ed25519``; ``mysql_clear_password`` over TLS); the
upstream never sees it. The greeting offers only capabilities Wiregate enforces: no
compression, no LOCAL INFILE, no query attributes, none of MariaDB's extended capabilities
(progress packets, bulk execution and cached metadata would each be a way around the relay).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from policies.decision import Policy, SessionInfo
from policies.guard import GuardPolicy
from policies.guardrails import Profile
from policies.mysql_statements import LEXING_MODES
from protocols.mysql import auth
from protocols.mysql import messages as my
from protocols.mysql.packets import MAX_PACKET, PacketError, encode
from proxy import sides
from proxy.catalog import CatalogCache, CatalogError
from proxy.config import ClientUser, MySQLListener, Upstream
from proxy.mysql_relay import HIGH_WATER, MySQLRelay
from proxy.mysql_upstream import MySQLUpstreamConnection, MySQLUpstreamError, connect, query
from proxy.session import Approver, Decider, _session_ids
from proxy.upstream import set_keepalive

if TYPE_CHECKING:
    from proxy.server import Worker

log = logging.getLogger("wiregate.mysql")

# What the greeting offers. CLIENT_LONG_PASSWORD set says "no MariaDB extended capabilities".
OFFERED = (
    my.CLIENT_LONG_PASSWORD | my.CLIENT_FOUND_ROWS | my.CLIENT_LONG_FLAG
    | my.CLIENT_CONNECT_WITH_DB | (1 << 4) | (1 << 6) | (1 << 8)   # NO_SCHEMA, ODBC, IGNORE_SPACE
    | my.CLIENT_PROTOCOL_41 | my.CLIENT_INTERACTIVE | my.CLIENT_TRANSACTIONS
    | my.CLIENT_SECURE_CONNECTION | my.CLIENT_MULTI_STATEMENTS | my.CLIENT_MULTI_RESULTS
    | my.CLIENT_PS_MULTI_RESULTS | my.CLIENT_PLUGIN_AUTH | my.CLIENT_CONNECT_ATTRS
    | my.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | (1 << 22)       # CAN_HANDLE_EXPIRED_PASSWORDS
    | my.CLIENT_SESSION_TRACK | my.CLIENT_DEPRECATE_EOF
)
# Flags that change what packets look like: the client and the upstream must agree on them.
WIRE_FORMAT = (my.CLIENT_DEPRECATE_EOF | my.CLIENT_SESSION_TRACK | my.CLIENT_MULTI_RESULTS
               | my.CLIENT_PS_MULTI_RESULTS | my.CLIENT_MULTI_STATEMENTS | my.CLIENT_PROTOCOL_41
               | my.CLIENT_TRANSACTIONS)
NATIVE = "mysql_native_password"
SHA2 = "caching_sha2_password"
ED25519 = "client_ed25519"
CLEAR = "mysql_clear_password"
MAX_LOGIN_PACKET = 64 * 1024
ER_ACCESS_DENIED = 1045
ER_BAD_DB = 1049
ER_HANDSHAKE = 1043
_rsa_key: Any = None


class LoginFailed(Exception):
    def __init__(self, errno: int, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.errno = errno
        self.sqlstate = sqlstate


def _nonce(n: int = 20) -> bytes:
    """Printable, never NUL: some clients read the scramble as a C string."""
    return bytes(0x21 + secrets.randbelow(0x5E) for _ in range(n))


def _rsa_public_pem() -> tuple[Any, bytes]:
    """One RSA key pair per process, for caching_sha2 full authentication without TLS."""
    global _rsa_key
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if _rsa_key is None:
        _rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    return _rsa_key, pem


async def greeting_version(up: Upstream, timeout: float = 3.0) -> str | None:
    """The version string the upstream's greeting carries, read and hung up on; None when
    it cannot be read. Clients pick defaults by it, so Wiregate's greeting repeats it."""
    async def read() -> str:
        if up.is_unix:
            reader, writer = await asyncio.open_unix_connection(up.host)
        else:
            reader, writer = await asyncio.open_connection(up.host, up.port)
        try:
            hdr = await reader.readexactly(4)
            payload = await reader.readexactly(int.from_bytes(hdr[:3], "little"))
            return my.HandshakeV10.decode(payload).server_version
        finally:
            writer.close()
    try:
        return await asyncio.wait_for(read(), timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, PacketError):
        return None


def profile_setup(profile: Profile | None, server_version: str) -> list[str]:
    """What a profile imposes on every upstream session, as SET statements: read-only
    transactions and a statement time limit (MariaDB's max_statement_time in seconds, MySQL's
    max_execution_time in milliseconds, which bounds SELECTs only)."""
    if profile is None:
        return []
    out = []
    if profile.read_only:
        out.append("SET SESSION TRANSACTION READ ONLY")
    if profile.statement_timeout_ms:
        if "mariadb" in server_version.lower():
            out.append(f"SET SESSION max_statement_time = {profile.statement_timeout_ms / 1000:g}")
        else:
            out.append(f"SET SESSION max_execution_time = {profile.statement_timeout_ms}")
    return out


class MySQLSession(Decider):
    """State shared by the login coroutine and the relay for one MySQL client."""

    def __init__(self, worker: Worker, listener: MySQLListener, policy: Policy,
                 approver: Approver, catalogs: CatalogCache, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.worker = worker
        self.listener = listener
        self.policy = policy
        self.approver = approver
        self.catalogs = catalogs
        self.connect_timeout = listener.connect_timeout
        self.reader = reader
        self.writer = writer
        self.id = f"{worker.index}-{next(_session_ids)}"
        peer = writer.get_extra_info("peername")
        self.client_host = peer[0] if isinstance(peer, tuple) else "localhost"
        self.client_addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "local"
        self.info = SessionInfo(self.id, "", "", "", client_addr=self.client_addr)
        self.tls = False
        self.upstream: Upstream | None = None
        self.up: MySQLUpstreamConnection | None = None
        self.relay: MySQLRelay | None = None
        self.connection_id = 0
        self.capabilities = 0
        self.setup: list[str] = []
        self.denials = 0
        self.started = time.monotonic()
        self.last_activity = time.monotonic()
        self._seq = 0
        self._idle_handle: asyncio.TimerHandle | None = None

    # -- startup-phase packet I/O --------------------------------------------------------------

    async def _read(self) -> bytes:
        return await self.reader.readexactly(self._header(await self.reader.readexactly(4)))

    def _header(self, hdr: bytes) -> int:
        """A login packet's length, after checking it and its sequence id."""
        n = int.from_bytes(hdr[:3], "little")
        if n >= MAX_PACKET or n > MAX_LOGIN_PACKET:
            raise PacketError("login packet too large", errno=ER_HANDSHAKE)
        if hdr[3] != self._seq:
            raise PacketError(f"packets out of order (got {hdr[3]}, expected {self._seq})")
        self._seq = (self._seq + 1) & 0xFF
        return n

    async def _read_first(self) -> bytes:
        """The client's first packet, read from the socket exactly (reading is paused): after
        an SSLRequest a client sends its TLS hello at once, without waiting for an answer,
        and those bytes must stay in the socket for the TLS layer."""
        loop = asyncio.get_running_loop()
        sock = self.writer.get_extra_info("socket")
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        raw.setblocking(False)
        early = _take_buffered(self.reader)
        if early:
            raise PacketError("the client spoke before the greeting")

        async def exactly(n: int) -> bytes:
            out = b""
            while len(out) < n:
                chunk = await loop.sock_recv(raw, n - len(out))
                if not chunk:
                    raise asyncio.IncompleteReadError(out, n)
                out += chunk
            return out

        try:
            return await exactly(self._header(await exactly(4)))
        finally:
            raw.close()

    def _write(self, payload: bytes) -> None:
        self.writer.write(encode(payload, self._seq))
        self._seq = (self._seq + 1) & 0xFF

    def _error(self, errno: int, sqlstate: str, message: str) -> None:
        if not self.writer.is_closing():
            self._write(my.ERR(errno, message, sqlstate).encode())

    # -- the whole login -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await asyncio.wait_for(self._login(), self.listener.startup_timeout)
        except TimeoutError:
            log.info("login timed out", extra={"session": self.id})
            self._error(ER_HANDSHAKE, "08S01", "wiregate: timeout during login")
            self.close()
            return
        except LoginFailed as exc:
            log.info("login refused", extra={"session": self.id, "user": self.info.user,
                                             "errno": exc.errno, "error": str(exc)})
            self._error(exc.errno, exc.sqlstate, str(exc))
            self.close()
            return
        except PacketError as exc:
            log.info("invalid login", extra={"session": self.id, "error": str(exc)})
            self._error(exc.errno if exc.errno != 1156 else ER_HANDSHAKE, "08S01",
                        f"wiregate: bad handshake: {exc}")
            self.close()
            return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            self.close()
            return
        self._start_relay()

    async def _login(self) -> None:
        lst = self.listener
        self.connection_id = self.worker.register_mysql(self)
        nonce = _nonce()
        offered = OFFERED | (my.CLIENT_SSL if self.worker.mysql_tls is not None else 0)
        greeting = my.HandshakeV10(self.worker.mysql_version or lst.server_version,
                                   self.connection_id, nonce, offered,
                                   charset=45, status=2, auth_plugin=NATIVE)
        transport: Any = self.writer.transport
        transport.pause_reading()
        self._write(greeting.encode())
        payload = await self._read_first()
        resp = my.HandshakeResponse41.decode(payload)
        if not resp.is_ssl_request:
            transport.resume_reading()
        else:
            ctx = self.worker.mysql_tls
            if ctx is None:
                raise LoginFailed(ER_HANDSHAKE, "08S01", "wiregate: TLS was not offered")
            await self.writer.start_tls(ctx)
            self.tls = self.info.tls = True
            resp = my.HandshakeResponse41.decode(await self._read())
            if resp.is_ssl_request:
                raise PacketError("a second SSL request")
        self.capabilities = caps = resp.capabilities & offered
        self.info.user = resp.user
        self.info.application_name = resp.attributes.get("program_name", "")
        if lst.require_tls and not self.tls:
            raise LoginFailed(ER_ACCESS_DENIED, "28000", f"wiregate: TLS is required for "
                              f"user '{resp.user}' (connect with --ssl / ssl-mode=REQUIRED)")
        if not resp.user:
            raise LoginFailed(ER_ACCESS_DENIED, "28000", "wiregate: no user name given")
        await self._authenticate(resp, nonce)
        name = resp.database or lst.default_database
        if not name:
            raise LoginFailed(ER_BAD_DB, "3D000", "wiregate: no database selected and no "
                              "default_database configured; Wiregate serves: "
                              + ", ".join(sorted(lst.databases)))
        upstream = lst.databases.get(name)
        if upstream is None:
            raise LoginFailed(ER_BAD_DB, "42000", f"Unknown database '{name}' (Wiregate "
                              f"serves: {', '.join(sorted(lst.databases))})")
        self.upstream = upstream
        self.info.database = name
        self.info.upstream_database = upstream.dbname
        self.info.upstream_user = upstream.user
        profile = self._profile()
        try:
            self.up = await connect(
                upstream, capabilities=caps, database=upstream.dbname,
                # The client's attributes go through; the DBA also sees whose session it is.
                attributes={**resp.attributes, "wiregate_user": resp.user},
                charset=resp.charset,
                max_packet=lst.max_packet_size, timeout=lst.connect_timeout)
        except TimeoutError:
            raise LoginFailed(2013, "08S01", "wiregate: timeout connecting to the upstream "
                              f"server for database '{name}'") from None
        except (MySQLUpstreamError, OSError) as exc:
            log.warning("upstream login failed", extra={"session": self.id, "error": str(exc)})
            raise LoginFailed(2003, "08S01", f"wiregate: cannot log in upstream for database "
                              f"'{name}': {exc}") from None
        up = self.up
        if (up.capabilities ^ caps) & WIRE_FORMAT & caps:
            missing = (up.capabilities ^ caps) & WIRE_FORMAT & caps
            raise LoginFailed(ER_HANDSHAKE, "08S01", "wiregate: the upstream server lacks "
                              f"capabilities the client uses (0x{missing:x})")
        self.capabilities = caps & (up.capabilities | ~WIRE_FORMAT)
        self.setup = profile_setup(profile, up.greeting.server_version)
        try:
            if isinstance(self.policy, GuardPolicy):
                self.setup = await self._plain_lexing(up) + self.setup
            for sql in self.setup:
                await asyncio.wait_for(query(up, sql), lst.connect_timeout)
        except (MySQLUpstreamError, TimeoutError) as exc:
            raise LoginFailed(1227, "42000", f"wiregate: the profile's session settings "
                              f"failed upstream: {exc}") from None
        if lst.tcp_keepalive:
            for sock in (self.writer.get_extra_info("socket"),
                         up.writer.get_extra_info("socket")):
                if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                    set_keepalive(sock, lst.keepalive_idle, lst.keepalive_interval,
                                  lst.keepalive_count)
        await self._load_catalog(upstream)
        self.info.parameters["server_version"] = up.greeting.server_version
        # Clients choose defaults (collations, SQL syntax) by the greeting's version: the
        # next greeting says what the server says.
        self.worker.mysql_version = up.greeting.server_version
        self._write(my.OK(status=up.status).encode())
        log.info("session started", extra={
            "session": self.id, "user": self.info.user, "database": name,
            "client": self.client_addr, "tls": self.tls, "upstream_tls": up.tls,
            "protocol": "mysql", "application_name": self.info.application_name})

    async def _plain_lexing(self, up: MySQLUpstreamConnection) -> list[str]:
        """The guardrails read statements as the server does by default: a session whose
        sql_mode has ANSI_QUOTES or NO_BACKSLASH_ESCAPES (from the server's global setting)
        gets them taken out, or the server would read quotes and backslashes otherwise."""
        rows = await asyncio.wait_for(query(up, "SELECT @@SESSION.sql_mode"),
                                      self.listener.connect_timeout)
        modes = (rows[0][0][0] or b"").decode() if rows and rows[0] else ""
        kept = [m for m in modes.split(",") if m and m.upper() not in LEXING_MODES]
        if len(kept) == len([m for m in modes.split(",") if m]):
            return []
        log.info("sql_mode without its lexing modes", extra={"session": self.id,
                                                              "sql_mode": modes})
        return [f"SET SESSION sql_mode = '{','.join(kept)}'"]

    def _profile(self) -> Profile | None:
        if not isinstance(self.policy, GuardPolicy):
            return None
        try:
            return self.policy.profile(self.info)
        except LookupError as exc:
            raise LoginFailed(1227, "42000", f"wiregate: {exc}; session refused") from None

    async def _load_catalog(self, upstream: Upstream) -> None:
        if not isinstance(self.policy, GuardPolicy):
            return
        try:
            await asyncio.wait_for(self.catalogs.get(upstream), self.listener.connect_timeout)
        except (CatalogError, TimeoutError) as exc:
            log.error("catalog unavailable; session refused",
                      extra={"session": self.id, "error": str(exc) or "timeout"})
            raise LoginFailed(1227, "42000", "wiregate: the guardrails cannot read the "
                              "upstream catalog; session refused (fail closed)") from None

    # -- client authentication -------------------------------------------------------------

    async def _authenticate(self, resp: my.HandshakeResponse41, nonce: bytes) -> None:
        user: ClientUser | None = self.worker.users.get(resp.user)
        plugins = user.mysql_plugins if user is not None else ()
        denied = LoginFailed(ER_ACCESS_DENIED, "28000", f"Access denied for user "
                             f"'{resp.user}'@'{self.client_host}' (using password: "
                             f"{'YES' if resp.auth_response else 'NO'})")
        chosen = resp.auth_plugin or NATIVE
        token = resp.auth_response
        usable = plugins + ((CLEAR,) if self.tls and plugins else ())
        if chosen in usable and chosen not in (NATIVE, CLEAR) and not token:
            # A client set to the user's plugin (--default-auth) answers the greeting with
            # nothing and waits for that plugin's own request, with a fresh nonce.
            nonce = _nonce(32 if chosen == ED25519 else 20)
            self._write(b"\xfe" + chosen.encode() + b"\0" + nonce
                        + (b"" if chosen == ED25519 else b"\0"))
            token = await self._read()
        elif chosen not in usable:
            # Switch to a plugin the user has a stored form for; native first, as every
            # client speaks it.
            order = [p for p in (NATIVE, SHA2, ED25519) if p in plugins] or [NATIVE]
            chosen = order[0]
            nonce = _nonce(32 if chosen == ED25519 else 20)
            extra = b"" if chosen == ED25519 else b"\0"
            self._write(b"\xfe" + chosen.encode() + b"\0" + nonce + extra)
            token = await self._read()
        if user is None:
            raise denied
        ok = False
        if chosen == NATIVE and user.mysql_native_password is not None:
            ok = auth.native_verify(token, nonce, user.mysql_native_password)
        elif chosen == ED25519 and user.client_ed25519 is not None:
            ok = auth.ed25519_verify(token, nonce, user.client_ed25519)
        elif chosen == SHA2 and user.caching_sha2_password is not None:
            ok = await self._sha2(token, nonce, user.caching_sha2_password)
        elif chosen == CLEAR and self.tls:
            ok = _clear_matches(token.rstrip(b"\0"), user)
        if not ok:
            raise denied

    async def _sha2(self, token: bytes, nonce: bytes, stored: bytes) -> bool:
        """caching_sha2_password: the fast path's scramble when the client sends one (the
        stored hash is this server's "cache"); otherwise full authentication with the
        password in clear over TLS, or RSA-encrypted with this process's public key."""
        if token and auth.sha2_verify(token, nonce, stored):
            self._write(b"\x01\x03")    # fast authentication succeeded
            return True
        if token and len(token) == 32:
            return False                # a wrong scramble: a wrong password
        self._write(b"\x01\x04")        # perform full authentication
        answer = await self._read()
        if answer == b"\x02":
            key, pem = _rsa_public_pem()
            self._write(b"\x01" + pem)
            encrypted = await self._read()
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding
            try:
                mixed = key.decrypt(encrypted, padding.OAEP(
                    mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
            except ValueError:
                return False
            password = bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(mixed))
        elif self.tls:
            password = answer
        else:
            return False
        password = password.rstrip(b"\0")
        return hmac.compare_digest(auth.sha2_stored(password), stored)

    # -- relay ----------------------------------------------------------------------------------

    def _start_relay(self) -> None:
        assert self.up is not None
        client_t: Any = self.writer.transport
        server_t: Any = self.up.writer.transport
        relay = MySQLRelay(self, client_t, server_t)
        self.relay = relay
        sides.attach(relay, _take_buffered(self.reader), _take_buffered(self.up.reader),
                     HIGH_WATER)
        if self.worker.shutting_down:
            self.begin_shutdown()
        if self.listener.idle_timeout > 0:
            self._arm_idle()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def _arm_idle(self) -> None:
        timeout = self.listener.idle_timeout
        due = self.last_activity + timeout
        now = time.monotonic()
        if now >= due and self.relay is not None and self.relay.idle:
            # Closed without a packet, as the server does at wait_timeout: an idle client is
            # not reading, and whatever it reads next must answer its next command.
            log.info("idle timeout", extra={"session": self.id})
            self.close()
            return
        self._idle_handle = asyncio.get_running_loop().call_later(max(due - now, 1.0),
                                                                  self._arm_idle)

    def begin_shutdown(self) -> None:
        relay = self.relay
        if relay is None:
            return
        relay.on_idle = self._close_if_idle
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        relay = self.relay
        if relay is not None and relay.idle and not relay.in_transaction:
            self.close()   # between commands: nothing is owed to the client

    def close(self, final: bytes | None = None) -> None:
        """Close both sides; ``final`` (an ERR payload) goes to the client when the
        exchange allows it."""
        relay = self.relay
        if relay is not None:
            relay.close(final)
        else:
            if not self.writer.is_closing():
                self.writer.close()
            if self.up is not None:
                self.up.writer.close()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if relay is None:
            self.worker.unregister_mysql(self)

    def finished(self) -> None:
        self.worker.unregister_mysql(self)
        relay = self.relay
        log.info("session ended", extra={
            "session": self.id, "user": self.info.user, "protocol": "mysql",
            "duration_s": round(time.monotonic() - self.started, 3),
            "bytes_from_client": relay.bytes_up if relay else 0,
            "bytes_to_client": relay.bytes_down if relay else 0,
            "denied": self.denials})


def _clear_matches(password: bytes, user: ClientUser) -> bool:
    if user.mysql_native_password is not None:
        return hmac.compare_digest(auth.native_stored(password), user.mysql_native_password)
    if user.caching_sha2_password is not None:
        return hmac.compare_digest(auth.sha2_stored(password), user.caching_sha2_password)
    if user.client_ed25519 is not None:
        return hmac.compare_digest(auth.ed25519_public(password), user.client_ed25519)
    return False


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    buf: bytearray = getattr(reader, "_buffer", bytearray())
    data = bytes(buf)
    buf.clear()
    return data
