"""One client session: startup, TLS, client login, upstream login, then the relay.

The startup phase runs as a coroutine over asyncio streams (it is short and sequential); once
both sides are logged in, the transports are handed to ``Relay`` protocols so the hot path runs
in plain callbacks with no coroutine or stream-buffer overhead.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from policies.decision import Decision, Deny, Hold, Policy, SessionInfo, Statement
from policies.guard import GuardPolicy, StartupRefused
from protocols.postgres import messages as m
from protocols.postgres.framing import StartupFramer
from protocols.postgres.scram import MECHANISM, ScramError, ScramServer, parse_verifier
from proxy import sides
from proxy.catalog import CatalogCache, CatalogError
from proxy.config import ClientUser, PostgresListener, Upstream
from proxy.relay import HIGH_WATER, Relay
from proxy.upstream import UpstreamConnection, UpstreamError, connect, set_keepalive

if TYPE_CHECKING:
    from proxy.server import Worker

log = logging.getLogger("wiregate.session")
_HDR = struct.Struct("!ci")
MAX_AUTH_MESSAGE = 10000
_session_ids = itertools.count(1)


class Approver(Protocol):
    def request(self, statement: Statement, session: SessionInfo,
                hold: Hold) -> Awaitable[Decision]: ...


class NoApprover:
    """Without an approval channel a held statement cannot run: refuse it and say why."""

    async def request(self, statement: Statement, session: SessionInfo,
                      hold: Hold) -> Decision:
        rule = f" (rule {hold.rule})" if hold.rule else ""
        return Deny("42501", f"wiregate: statement requires approval{rule}: {hold.reason}",
                    hint="No approver is configured for this listener.", rule=hold.rule)


class StartupFailed(Exception):
    def __init__(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.hint = hint


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    """One startup-phase packet, read exactly so nothing after it is consumed."""
    hdr = await reader.readexactly(4)
    return hdr + await reader.readexactly(StartupFramer.packet_length(hdr) - 4)


async def _read_typed(reader: asyncio.StreamReader, expect: bytes) -> bytes:
    hdr = await reader.readexactly(5)
    code, length = _HDR.unpack(hdr)
    if code != expect:
        raise m.ProtocolViolation(f"expected message {expect!r} during authentication, "
                                  f"got {code!r}")
    if length < 4 or length - 4 > MAX_AUTH_MESSAGE:
        raise m.ProtocolViolation(f"invalid message length {length} during authentication")
    return await reader.readexactly(length - 4)


def _buffered(reader: asyncio.StreamReader) -> bool:
    return bool(getattr(reader, "_buffer", b""))


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes a StreamReader read ahead: they belong to whoever takes over the transport."""
    buf: bytearray = getattr(reader, "_buffer", bytearray())
    data = bytes(buf)
    buf.clear()
    return data


class Decider:
    """The decision point and what follows a Hold, shared by the PostgreSQL and MySQL
    sessions: the policy is asked, a refusal counted, a held statement waits for its
    approver or for a fresh catalog read."""

    worker: Worker
    policy: Policy
    approver: Approver
    info: SessionInfo
    id: str
    upstream: Upstream | None
    denials: int
    catalogs: CatalogCache
    connect_timeout: float

    # -- the decision point ----------------------------------------------------------------

    def decide(self, statement: Statement) -> Decision:
        try:
            return self.policy.decide(statement, self.info)
        except Exception:
            log.exception("policy failed; statement refused", extra={"session": self.id})
            return Deny("XX000", "wiregate: policy evaluation failed; statement refused",
                        hint="Wiregate fails closed when a policy cannot decide.")

    def denied(self, statement: Statement, decision: Deny) -> None:
        self.denials += 1
        log.info("statement denied", extra={
            "session": self.id, "user": self.info.user, "source": statement.source,
            "sqlstate": decision.sqlstate, "rule": decision.rule})

    def hold(self, statement: Statement, decision: Hold,
             resume: Callable[[Decision], None]) -> None:
        if decision.wait_for == "catalog":
            self._catalog_wait(statement, resume)
            return
        log.info("statement held for approval", extra={
            "session": self.id, "user": self.info.user, "rule": decision.rule})

        async def wait() -> None:
            try:
                result = await self.approver.request(statement, self.info, decision)
            except Exception:
                log.exception("approver failed", extra={"session": self.id})
                result = Deny("42501", "wiregate: approval failed; statement refused")
            resume(result)

        self.worker.spawn(wait())

    def _catalog_wait(self, statement: Statement, resume: Callable[[Decision], None]) -> None:
        """The policy lacks a catalog fact (a table created a moment ago, a view just
        replaced): read the catalog again, then ask once more; a second miss is a refusal."""
        since = time.monotonic()
        upstream = self.upstream

        async def wait() -> None:
            if upstream is not None:
                try:
                    await asyncio.wait_for(self.catalogs.fresh(upstream, since),
                                           self.connect_timeout)
                except (CatalogError, TimeoutError) as exc:
                    log.warning("catalog re-read failed", extra={
                        "session": self.id, "error": str(exc) or "timeout"})
            self.info.policy_state["catalog_retry"] = True
            try:
                result = self.decide(statement)
            finally:
                self.info.policy_state.pop("catalog_retry", None)
            if isinstance(result, Hold) and result.wait_for != "catalog":
                self.hold(statement, result, resume)
                return
            resume(result)

        self.worker.spawn(wait())


class Session(Decider):
    """State shared by the startup coroutine and the relay for one client."""

    def __init__(self, worker: Worker, listener: PostgresListener, policy: Policy,
                 approver: Approver, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.worker = worker
        self.listener = listener
        self.catalogs = worker.catalogs
        self.connect_timeout = listener.connect_timeout
        self.policy = policy
        self.approver = approver
        self.reader = reader
        self.writer = writer
        self.id = f"{worker.index}-{next(_session_ids)}"
        peer = writer.get_extra_info("peername")
        self.client_addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "local"
        self.info = SessionInfo(self.id, "", "", "", client_addr=self.client_addr)
        self.tls = False
        self.upstream: Upstream | None = None
        self.up: UpstreamConnection | None = None
        self.relay: Relay | None = None
        self.key: tuple[int, int] | None = None
        self.last_activity = time.monotonic()
        self.started = time.monotonic()
        self.denials = 0
        self._idle_handle: asyncio.TimerHandle | None = None

    # -- facts the relay updates ---------------------------------------------------------

    @property
    def transaction_status(self) -> str:
        return self.info.transaction_status

    @transaction_status.setter
    def transaction_status(self, value: str) -> None:
        self.info.transaction_status = value
        if value == "I" and "ddl_pending" in self.info.policy_state:
            hook = getattr(self.policy, "transaction_ended", None)
            if hook is not None:
                hook(self.info)

    @property
    def parameters(self) -> dict[str, str]:
        return self.info.parameters

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def notification_payload(self) -> Callable[[str], str] | None:
        """How the policy rewrites NOTIFY payloads reaching this session (None: untouched)."""
        hook = getattr(self.policy, "notification_payload", None)
        return hook(self.info) if hook is not None else None

    # -- errors on the wire ----------------------------------------------------------------

    def protocol_error(self, message: str) -> None:
        log.warning("client protocol violation", extra={"session": self.id, "error": message})
        self.close(m.error("08P01", f"wiregate: invalid frontend message: {message}",
                           severity="FATAL"))

    def upstream_protocol_error(self, message: str) -> None:
        log.warning("upstream protocol violation", extra={"session": self.id, "error": message})
        self.close(m.error("08P01", f"wiregate: invalid data from upstream: {message}",
                           severity="FATAL"))

    def close(self, final: bytes | None = None) -> None:
        """Close both sides. ``final`` is sent to the client when framing allows it."""
        relay = self.relay
        if relay is not None:
            if relay.closed:
                return
            if final is not None and relay.be.idle:
                relay.client.write(final)
            relay.closed = True
            if relay.be.idle and relay.fe.idle and not relay.server.is_closing():
                relay.server.write(m.Terminate().encode())
            relay.server.close()
            relay.client.close()
        else:
            if final is not None and not self.writer.is_closing():
                self.writer.write(final)
            self.writer.close()
            if self.up is not None:
                self.up.writer.close()
        if self._idle_handle is not None:
            self._idle_handle.cancel()

    # -- startup ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await asyncio.wait_for(self._startup(), self.listener.startup_timeout)
        except TimeoutError:
            log.info("startup timed out", extra={"session": self.id})
            self.close(m.error("08006", "wiregate: timeout during connection startup",
                               severity="FATAL"))
            return
        except StartupFailed as exc:
            log.info("login refused", extra={"session": self.id, "user": self.info.user,
                                             "sqlstate": exc.sqlstate, "error": str(exc)})
            self.close(m.error(exc.sqlstate, str(exc), severity="FATAL", hint=exc.hint))
            return
        except m.ProtocolViolation as exc:
            log.info("invalid startup", extra={"session": self.id, "error": str(exc)})
            self.close(m.error("08P01", f"wiregate: {exc}", severity="FATAL"))
            return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            self.close()
            return
        if self.up is None:
            return  # a cancel request or a refused negotiation: nothing more to do
        self._start_relay()

    async def _startup(self) -> None:
        reader, writer = self.reader, self.writer
        while True:
            packet = await _read_packet(reader)
            msg = m.decode_startup(packet)
            if isinstance(msg, m.SSLRequest):
                if self.tls:
                    raise m.ProtocolViolation("SSLRequest received on an encrypted connection")
                ctx = self.worker.server_tls
                if ctx is None:
                    writer.write(b"N")
                    continue
                if _buffered(reader):  # plaintext smuggled ahead of the TLS handshake
                    raise m.ProtocolViolation("received unencrypted data after SSL request")
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(ctx)
                self.tls = True
                self.info.tls = True
                continue
            if isinstance(msg, m.GSSENCRequest):
                writer.write(b"N")
                continue
            if isinstance(msg, m.CancelRequest):
                await self.worker.cancel(msg.process_id, msg.secret_key)
                writer.close()
                return
            assert isinstance(msg, m.StartupMessage)
            await self._login(msg)
            return

    async def _login(self, msg: m.StartupMessage) -> None:
        writer = self.writer
        unsupported = tuple(k for k in msg.params if k.startswith("_pq_."))
        if msg.version & 0xFFFF or unsupported:
            writer.write(m.NegotiateProtocolVersion(0, unsupported).encode())
        params = {k: v for k, v in msg.params.items() if not k.startswith("_pq_.")}
        user = params.get("user", "")
        if not user:
            raise StartupFailed("28000", "no PostgreSQL user name specified in startup packet")
        database = params.get("database") or user
        self.info.user, self.info.database = user, database
        self.info.application_name = params.get("application_name", "")
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            raise StartupFailed("42501", "wiregate: replication connections are not allowed",
                                hint="Wiregate relays SQL sessions only.")
        if self.listener.require_tls and not self.tls:
            raise StartupFailed("28000", f"wiregate: TLS is required for user \"{user}\"",
                                hint="Connect with sslmode=require.")
        await self._authenticate(user)
        upstream = self.listener.databases.get(database)
        if upstream is None:
            raise StartupFailed("3D000", f"database \"{database}\" does not exist",
                                hint="Wiregate serves: "
                                + ", ".join(sorted(self.listener.databases)))
        self.upstream = upstream
        self.info.upstream_database = upstream.dbname
        self.info.upstream_user = upstream.user
        params = self._session_parameters(params)
        try:
            self.up = await asyncio.wait_for(connect(upstream, params),
                                             self.listener.connect_timeout)
        except TimeoutError:
            raise StartupFailed("08006", "wiregate: timeout connecting to upstream server "
                                f"for database \"{database}\"") from None
        except UpstreamError as exc:
            log.warning("upstream login failed", extra={"session": self.id, "error": str(exc)})
            raise StartupFailed(exc.sqlstate, f"wiregate: {exc}") from None
        sock = writer.get_extra_info("socket")
        lst = self.listener
        if lst.tcp_keepalive:
            set_keepalive(sock, lst.keepalive_idle, lst.keepalive_interval, lst.keepalive_count)
            set_keepalive(self.up.writer.get_extra_info("socket"), lst.keepalive_idle,
                          lst.keepalive_interval, lst.keepalive_count)
        await self._load_catalog(upstream)
        self.key = self.worker.register(self)
        out = [m.auth_ok()]
        for name in self.up.parameter_order:
            out.append(m.ParameterStatus(name, self.up.parameters[name]).encode())
        self.info.parameters.update(self.up.parameters)
        out.append(m.BackendKeyData(*self.key).encode())
        out.append(m.ReadyForQuery(self.up.transaction_status).encode())
        writer.write(b"".join(out))
        log.info("session started", extra={
            "session": self.id, "user": user, "database": database,
            "client": self.client_addr, "tls": self.tls, "upstream_tls": self.up.tls,
            "application_name": self.info.application_name})

    def _session_parameters(self, params: dict[str, str]) -> dict[str, str]:
        """What goes upstream in the startup packet: the policy may refuse a client
        parameter or add its own (a read-only profile opens the session read-only)."""
        hook = getattr(self.policy, "session_parameters", None)
        if hook is None:
            return params
        try:
            result: dict[str, str] = hook(params, self.info)
        except StartupRefused as exc:
            self.denials += 1
            log.info("startup parameter refused", extra={
                "session": self.id, "user": self.info.user, "rule": exc.deny.rule})
            raise StartupFailed(exc.deny.sqlstate, exc.deny.message, exc.deny.hint) from None
        except LookupError as exc:
            log.error("no guardrails profile", extra={"session": self.id, "error": str(exc)})
            raise StartupFailed("42501", f"wiregate: {exc}; session refused") from None
        return result

    async def _load_catalog(self, upstream: Upstream) -> None:
        """Guardrails resolve names against the catalog: have it before the first statement."""
        if not isinstance(self.policy, GuardPolicy):
            return
        try:
            await asyncio.wait_for(self.worker.catalogs.get(upstream),
                                   self.listener.connect_timeout)
        except (CatalogError, TimeoutError) as exc:
            log.error("catalog unavailable; session refused",
                      extra={"session": self.id, "error": str(exc) or "timeout"})
            raise StartupFailed("08006", "wiregate: the guardrails cannot read the upstream "
                                "catalog; session refused (fail closed)") from None

    async def _authenticate(self, user: str) -> None:
        client_user: ClientUser | None = self.worker.users.get(user)
        # A login with only MySQL password forms cannot use PostgreSQL: it fails like an
        # unknown user, after the same exchange.
        verifier = parse_verifier(client_user.scram_verifier) \
            if client_user and client_user.scram_verifier else None
        scram = ScramServer(verifier, user)
        failed = StartupFailed("28P01", f"password authentication failed for user \"{user}\"")
        self.writer.write(m.auth_sasl([MECHANISM]))
        try:
            init = m.SASLInitialResponse.decode(await _read_typed(self.reader, b"p"))
            if init.mechanism != MECHANISM or init.data is None:
                raise StartupFailed("28000", "wiregate: client selected an invalid SASL "
                                    "authentication mechanism")
            self.writer.write(m.Authentication(m.AUTH_SASL_CONTINUE,
                                               scram.first(init.data)).encode())
            final = scram.final(await _read_typed(self.reader, b"p"))
        except ScramError:
            raise failed from None
        self.writer.write(m.Authentication(m.AUTH_SASL_FINAL, final).encode())

    # -- relay -----------------------------------------------------------------------------

    def _start_relay(self) -> None:
        assert self.up is not None
        client_t: Any = self.writer.transport
        server_t: Any = self.up.writer.transport
        relay = Relay(self, client_t, server_t,
                      bool(getattr(self.policy, "tracks_results", False)))
        self.relay = relay
        # Bytes the stream readers buffered before the switch belong to the relay now.
        sides.attach(relay, _take_buffered(self.reader), _take_buffered(self.up.reader),
                     HIGH_WATER)
        if self.worker.shutting_down:
            self.begin_shutdown()
        if self.listener.idle_timeout > 0:
            self._arm_idle()

    def _arm_idle(self) -> None:
        timeout = self.listener.idle_timeout
        loop = asyncio.get_running_loop()
        due = self.last_activity + timeout
        now = time.monotonic()
        if now >= due and self.relay is not None and self.relay.idle:
            log.info("idle timeout", extra={"session": self.id})
            self.close(m.error("57P05", "terminating connection due to idle-session timeout "
                               "(wiregate idle_timeout)", severity="FATAL"))
            return
        self._idle_handle = loop.call_later(max(due - now, 1.0), self._arm_idle)

    def begin_shutdown(self) -> None:
        """Finish the current transaction, then close: graceful shutdown of one session."""
        relay = self.relay
        if relay is None:
            return
        relay.on_idle = self._close_if_idle
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        relay = self.relay
        if relay is not None and relay.idle and self.transaction_status == "I":
            self.close(m.error("57P01", "terminating connection due to administrator command",
                               severity="FATAL"))

    def finished(self) -> None:
        self.worker.unregister(self)
        relay = self.relay
        log.info("session ended", extra={
            "session": self.id, "user": self.info.user,
            "duration_s": round(time.monotonic() - self.started, 3),
            "bytes_from_client": relay.bytes_up if relay else 0,
            "bytes_to_client": relay.bytes_down if relay else 0,
            "denied": self.denials})
