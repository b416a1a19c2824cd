"""The relay: a logged-in session's two sockets, and the hot path between them.

Client bytes are framed; every Query, Parse and FunctionCall goes through the policy's single
``decide`` call; everything else is forwarded as the client's own bytes. Server bytes are framed
with only the messages that steer the session watched; DataRows are looked at only while the
current result has a rewrite, otherwise whole buffers are forwarded untouched.

A denied statement is answered with exact PostgreSQL behaviour by letting the server produce
the failure: the statement is replaced by one that fails to parse under the same name, the
server's error is swapped for Wiregate's, and the server's own ReadyForQuery follows. The
transaction status, the rollback of an implicit transaction and the skip-until-Sync of the
extended protocol are therefore the server's, not an imitation.

Two modes keep the hot path short. When the policy never rewrites results, the relay only
counts batches (Sync, Query, FunctionCall against ReadyForQuery) and watches nothing else.
When it may, every response the server owes is queued in order, so each RowDescription and
DataRow is matched to the statement and portal it belongs to.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from policies.decision import (
    Allow,
    CellRewrite,
    Column,
    Decision,
    Deny,
    Hold,
    MessageScrub,
    ResultTransform,
    Statement,
)
from protocols.postgres import messages as m
from protocols.postgres.framing import RELEASED, VALID_BACKEND, VALID_FRONTEND, Frame, Framer
from protocols.postgres.rows import RowPlan, rewrite_rows

if TYPE_CHECKING:
    from proxy.session import Session

log = logging.getLogger("wiregate.relay")

DENIED_SQL = "wiregate_denied_statement"  # fails to parse upstream, on purpose
_DENIED_MARK = DENIED_SQL.encode()
HIGH_WATER = 512 * 1024
_H = struct.Struct("!h")
_I = struct.Struct("!i")

# Frontend messages watched: all that steer tracking, or (light) only those a decision needs.
_FULL_WATCH = b"QPBDECSHXF"
_LIGHT_WATCH = b"QPSHXF"
_TRACKING_ONLY = b"BDEC"

# Response units the server owes for what was forwarded, in order.
PARSE, BIND, DESCRIBE_S, DESCRIBE_P, EXECUTE, CLOSE, SYNC, QUERY, FUNCTION = range(9)
_ENDS_BATCH = (SYNC, QUERY, FUNCTION)


@dataclass
class PreparedInfo:
    transform: ResultTransform | None = None
    fields: bytes | None = None        # RowDescription body, decoded only when rewriting
    scrub: MessageScrub | None = None  # for the errors and notices of each execution


@dataclass
class PortalInfo:
    statement: PreparedInfo
    result_formats: tuple[int, ...] = ()
    fields: bytes | None = None


@dataclass(slots=True)
class Pending:
    kind: int
    transform: ResultTransform | None = None  # QUERY: the statement's result transform
    prepared: PreparedInfo | None = None
    portal: PortalInfo | None = None
    swallow: bool = False              # injected Describe: response is Wiregate's only


@dataclass
class _HeldWork:
    """A chunk paused at a statement waiting for approval, and where to resume."""

    data: bytes
    frames: list[Frame]
    index: int
    statement: Statement


# Markers for requests whose responses pass as they are (shared: never mutated).
_PLAIN_QUERY = Pending(QUERY)
_PLAIN_SYNC = Pending(SYNC)
_PARSE = Pending(PARSE)
_BIND = Pending(BIND)


class Splicer:
    """What to forward from one chunk: the chunk itself while nothing changes; once a message
    is replaced or dropped, the pieces around it (views of the chunk, never copies)."""

    __slots__ = ("data", "view", "out", "last", "changed")

    def __init__(self, data: bytes, spanned: bool) -> None:
        self.data = data
        self.view = memoryview(data)
        self.out: list[bytes | memoryview] = []
        self.last = 0
        self.changed = spanned

    def _diverge(self) -> None:
        if not self.changed:
            self.changed = True
            if self.last:
                self.out.append(self.view[:self.last])

    def keep_to(self, pos: int) -> None:
        if self.changed and pos > self.last:
            self.out.append(self.view[self.last:pos])
        self.last = max(self.last, pos)

    def drop_to(self, pos: int) -> None:
        if pos > self.last:
            self._diverge()
            self.last = pos

    def keep(self, f: Frame) -> None:
        if f.start < 0:
            self.out.append(f.buf)
            self.last = f.end
        else:
            self.keep_to(f.end)

    def replace(self, f: Frame, new: bytes) -> None:
        if f.start >= 0:
            self.keep_to(f.start)
            self._diverge()
        self.last = f.end
        if new:
            self.out.append(new)

    def insert(self, new: bytes) -> None:
        self._diverge()
        self.out.append(new)

    def result(self, forwardable: int) -> bytes | None:
        """Bytes to forward, or None when there are none."""
        if not self.changed:
            return self.data if forwardable == len(self.data) else self.data[:forwardable]
        self.keep_to(forwardable)
        return b"".join(self.out) if self.out else None


def _columns(body: bytes) -> list[Column]:
    rd = m.decode_backend(b"T", body)
    assert isinstance(rd, m.RowDescription)
    return [Column(i, f.name, f.table_oid, f.column, f.type_oid, f.type_size, f.type_modifier,
                   f.format) for i, f in enumerate(rd.fields)]


def _with_formats(cols: list[Column], formats: tuple[int, ...]) -> list[Column]:
    if not formats:
        fmts = [0] * len(cols)
    elif len(formats) == 1:
        fmts = [formats[0]] * len(cols)
    else:
        fmts = list(formats) + [0] * (len(cols) - len(formats))
    return [Column(c.index, c.name, c.table_oid, c.column_number, c.type_oid, c.type_size,
                   c.type_modifier, fmts[c.index]) for c in cols]


def _bind_info(body: bytes) -> tuple[str, str, tuple[int, ...]]:
    """Portal name, statement name and result formats of a Bind, skipping the parameters."""
    r = m.Reader(body, "Bind")
    portal, stmt = r.cstring(), r.cstring()
    r.raw(2 * r.count("format"))
    for _ in range(r.count("parameter")):
        n = r.int32()
        if n > 0:
            r.raw(n)
        elif n < -1:
            raise m.ProtocolViolation("Bind: invalid parameter length")
    fmts = tuple(r.int16() for _ in range(r.count("result format")))
    r.end()
    return portal, stmt, fmts


class Relay:
    """Both directions of one session after login."""

    def __init__(self, session: Session, client: asyncio.Transport,
                 server: asyncio.Transport, track_results: bool) -> None:
        self.session = session
        self.client = client
        self.server = server
        self.track = track_results
        limit = session.listener.max_message_size
        self.fe = Framer(VALID_FRONTEND, limit, "frontend")
        self.be = Framer(VALID_BACKEND, limit, "backend")
        if track_results:
            self.fe.set_watch(_LIGHT_WATCH)
            self.be.set_watch(b"ZESNA")
            self.be.row_runs = True
        else:
            self.fe.set_watch(b"QPSHXF")
            self.be.set_watch(b"ZS")
        self.pending: deque[Pending] = deque()
        self.statements: dict[str, PreparedInfo] = {}
        self.portals: dict[str, PortalInfo] = {}
        # Names of statements and portals whose rows are rewritten. While there are none (and
        # no response needs looking at), Bind, Describe, Execute and Close are not watched:
        # they can only name statements whose rows pass as they are ("light" tracking).
        self.rewriting: set[str] = set()
        self.rewriting_portals: set[str] = set()
        self.light = track_results
        # Once a prepared statement reads masked columns, every later error of the session
        # is scrubbed (its executions are not watched one by one).
        self.sticky_scrub: MessageScrub | None = None
        self.sent_batches = 0       # Sync/Query/FunctionCall forwarded
        self.done_batches = 0       # ReadyForQuery received
        self.denies: deque[tuple[int, bytes]] = deque()   # (batch, client-facing error)
        self.discarding = False     # a Parse was denied: drop client messages until Sync
        self.held: _HeldWork | None = None
        self.backlog: deque[bytes] = deque()
        self.plan: RowPlan | None = None   # rewrite of the current rows
        # Errors and notices up to the end of batch ``scrub_batch`` pass through ``scrub``.
        self.scrub: MessageScrub | None = None
        self.scrub_batch = -1
        self.payload = session.notification_payload() if track_results else None
        self.attentive = False      # some pending response needs looking at (see _attend)
        self.closed = False
        self.terminating = False
        self.bytes_up = 0
        self.bytes_down = 0
        self.on_idle: Callable[[], None] | None = None

    # ------------------------------------------------------------------ client → server

    def client_data(self, data: bytes) -> None:
        self.session.touch()
        self.bytes_up += len(data)
        if self.held is not None or self.backlog:
            self.backlog.append(data)
            return
        self._client_chunk(data)

    def _client_chunk(self, data: bytes) -> None:
        if self.track and not self.light:
            self._maybe_light()
        try:
            frames = self.fe.scan(data)
        except m.ProtocolViolation as exc:
            self.session.protocol_error(str(exc))
            return
        if not self.track and not self.discarding and not self.fe.spanned:
            # Fast path: forward the chunk itself unless a decision changes it.
            for i, f in enumerate(frames):
                code = f.code
                if code == 0x51 or code == 0x50 or code == 0x46:  # Query, Parse, FunctionCall
                    try:
                        stmt = _statement(f)
                    except m.ProtocolViolation as exc:
                        self.session.protocol_error(str(exc))
                        return
                    decision = self.session.decide(stmt)
                    if type(decision) is Allow:  # a light relay never rewrites rows
                        if code != 0x50:
                            self.sent_batches += 1
                        continue
                    self._divert(data, frames, i, stmt, decision)
                    return
                if code == 0x53:
                    self.sent_batches += 1
                elif code == 0x58:
                    self.terminating = True
            self.server.write(data)
            return
        if self.track and not self.discarding and not self.fe.spanned:
            self._tracked_chunk(data, frames)
            return
        self._client_frames(Splicer(data, self.fe.spanned), frames, 0)

    def _tracked_chunk(self, data: bytes, frames: list[Frame]) -> None:
        """The tracking relay's fast path for statements whose rows need no rewriting.

        A simple query queues one marker. An extended-protocol batch that lies whole in this
        chunk and only names such statements and portals queues one marker for its Sync: its
        responses need no looking at, so none are matched to requests. Anything else (a
        statement with a rewrite, a denial, a hold, a batch that goes on in the next chunk)
        queues what the general path would and continues there from where it appears.
        """
        batch: list[Pending] = []   # what this batch would queue, kept back until its Sync
        statements, portals = self.statements, self.portals
        for i, f in enumerate(frames):
            code = f.code
            if code == 0x51 or code == 0x50:  # Query, Parse
                if code == 0x51 and batch:
                    break
                try:
                    stmt = _statement(f)
                except m.ProtocolViolation as exc:
                    self.session.protocol_error(str(exc))
                    return
                decision = self.session.decide(stmt)
                if type(decision) is not Allow or decision.transform is not None:
                    self._queue(batch)
                    self._divert(data, frames, i, stmt, decision)
                    return
                if decision.scrub is not None:
                    self._scrub_batch(decision.scrub)
                if code == 0x51:
                    self.sent_batches += 1
                    self.pending.append(_PLAIN_QUERY)
                else:
                    known = statements.get(stmt.name)
                    if known is None or known.transform is not None \
                            or known.scrub is not decision.scrub:
                        self._set_statement(stmt.name, PreparedInfo(None, scrub=decision.scrub))
                    batch.append(_PARSE)
            elif code == 0x42:  # Bind
                try:
                    portal, name = _names(f)
                except m.ProtocolViolation as exc:
                    self.session.protocol_error(str(exc))
                    return
                bound = statements.get(name) or PreparedInfo()
                if bound.transform is not None:
                    break
                self._set_portal(portal, PortalInfo(bound))
                if bound.scrub is not None:
                    self._scrub_batch(bound.scrub)
                batch.append(_BIND)
            elif code == 0x44 or code == 0x45:  # Describe, Execute
                body = f.raw
                end = body.find(0, 6 if code == 0x44 else 5)
                if end < 0 or (code == 0x44 and len(body) < 7):
                    break   # malformed: the general path says so
                if code == 0x44:
                    kind = body[5]
                    name = _decode(bytes(body[6:end]))
                else:
                    kind = 0x50
                    name = _decode(bytes(body[5:end]))
                if kind == 0x53:
                    prepared = statements.get(name)
                    if prepared is not None and prepared.transform is not None:
                        break
                    batch.append(Pending(DESCRIBE_S, prepared=prepared))
                    continue
                portal_info = portals.get(name)
                if portal_info is not None and portal_info.statement.transform is not None:
                    break
                batch.append(Pending(DESCRIBE_P if code == 0x44 else EXECUTE,
                                     portal=portal_info))
            elif code == 0x53:  # Sync: the whole batch was plain
                self.sent_batches += 1
                batch.clear()
                self.pending.append(_PLAIN_SYNC)
            elif code != 0x48:  # Flush passes; anything else goes the general way
                break
        else:
            self._queue(batch)
            self._attend()
            self.server.write(data)
            return
        self._queue(batch)
        self._client_frames(Splicer(data, False), frames, i)

    def _divert(self, data: bytes, frames: list[Frame], i: int, stmt: Statement,
                decision: Decision) -> None:
        """Leave a fast path at ``frames[i]``, whose decision changes what is forwarded."""
        out = Splicer(data, False)
        if isinstance(decision, Hold):
            self._hold(out, frames, i, stmt, decision)
            return
        self._apply(frames[i], stmt, decision, out)
        self._continue(out, frames, i)

    def _continue(self, out: Splicer, frames: list[Frame], i: int) -> None:
        """Go on after ``frames[i]`` was applied. A statement whose rows are rewritten, met
        while tracking light, makes every later Bind, Describe and Execute matter: the rest
        of the chunk, scanned without them, is forwarded up to that statement and scanned
        again in full."""
        f = frames[i]
        if not (self.light and (self.rewriting or self.rewriting_portals)):
            self._client_frames(out, frames, i + 1)
            return
        head = out.result(f.end)
        self._go_full()
        self._attend()
        if head is not None and not self.closed:
            self.server.write(head)
        rest = out.data[f.end:]
        self.fe.reset()
        if rest:
            self._client_chunk(rest)

    def _set_statement(self, name: str, info: PreparedInfo | None) -> None:
        if info is None:
            self.statements.pop(name, None)
        else:
            self.statements[name] = info
            if info.scrub is not None:
                self.sticky_scrub = info.scrub
                self._scrub_batch(info.scrub)
        if info is not None and info.transform is not None:
            self.rewriting.add(name)
        else:
            self.rewriting.discard(name)

    def _set_portal(self, name: str, info: PortalInfo | None) -> None:
        if info is None:
            self.portals.pop(name, None)
        else:
            self.portals[name] = info
        if info is not None and info.statement.transform is not None:
            self.rewriting_portals.add(name)
        else:
            self.rewriting_portals.discard(name)

    def _go_full(self) -> None:
        """Watch every message that steers tracking from the next scan on."""
        if self.light:
            self.light = False
            self.fe.set_watch(_TRACKING_ONLY)

    def _maybe_light(self) -> None:
        """Back to light tracking at a chunk boundary once nothing can need it."""
        if not self.light and not self.rewriting and not self.rewriting_portals \
                and not self.attentive and not self.discarding and self.fe.idle:
            self.light = True
            self.fe.set_watch(_TRACKING_ONLY, False)

    def _queue(self, batch: list[Pending]) -> None:
        """Queue what a batch kept back, as the general path would have."""
        if batch:
            was_empty = not self.pending
            self.pending.extend(batch)
            batch.clear()
            if was_empty:
                self._start_execute()

    def _client_frames(self, out: Splicer, frames: list[Frame], i: int) -> None:
        """Decide on the watched frontend messages from ``frames[i]`` on; forward the rest."""
        try:
            while i < len(frames):
                f = frames[i]
                i += 1
                if self.discarding:
                    out.drop_to(f.start if f.start >= 0 else 0)
                code = f.code
                if code == RELEASED:
                    if self.discarding:
                        out.replace(f, b"")
                    else:
                        out.keep(f)
                    continue
                if self.discarding and code != 0x53 and code != 0x48:  # Sync, Flush
                    out.replace(f, b"")
                    continue
                if code == 0x51 or code == 0x50 or code == 0x46:  # Query, Parse, FunctionCall
                    stmt = _statement(f)
                    decision = self.session.decide(stmt)
                    if isinstance(decision, Hold):
                        self._hold(out, frames, i - 1, stmt, decision)
                        return
                    self._apply(f, stmt, decision, out)
                    if self.light and (self.rewriting or self.rewriting_portals):
                        self._continue(out, frames, i - 1)
                        return
                    continue
                if code == 0x53:  # Sync
                    self.sent_batches += 1
                    self.discarding = False
                elif code == 0x58:  # Terminate
                    self.terminating = True
                if self.track:
                    self._track_client(f)
                out.keep(f)
            if self.discarding:
                out.drop_to(self.fe.forwardable)
        except m.ProtocolViolation as exc:
            self.session.protocol_error(str(exc))
            return
        if self.track:
            self._attend()   # before the server can answer what is forwarded now
        data = out.result(self.fe.forwardable)
        if data is not None and not self.closed:
            self.server.write(data)

    def _apply(self, f: Frame, stmt: Statement, decision: Decision, out: Splicer) -> None:
        """Forward an allowed statement, or its failing stand-in for a denied one."""
        if isinstance(decision, Deny):
            err = m.error(decision.sqlstate, decision.message, hint=decision.hint,
                          detail=decision.detail)
            self.session.denied(stmt, decision)
            self.denies.append((self.sent_batches, err))
            self.be.watch[0x45] = 1
            if stmt.source == "parse":
                self._set_statement(stmt.name, None)
                out.replace(f, m.Parse(stmt.name, DENIED_SQL).encode())
                if self.track:
                    self.pending.append(Pending(PARSE))
                # The server skips to Sync after the error; so do we, forwarding nothing.
                self.discarding = True
            else:
                out.replace(f, m.Query(DENIED_SQL).encode())
                self.sent_batches += 1
                if self.track:
                    self.pending.append(Pending(QUERY))
            return
        assert isinstance(decision, Allow)
        out.keep(f)
        if decision.transform is not None:
            self._rows_may_change()
        if decision.scrub is not None:
            self._scrub_batch(decision.scrub)
        if stmt.source != "parse":
            self.sent_batches += 1
            if self.track:
                self.pending.append(Pending(QUERY if stmt.source == "query" else FUNCTION,
                                            transform=decision.transform))
            return
        if not self.track:
            return
        info = PreparedInfo(decision.transform, scrub=decision.scrub)
        self._set_statement(stmt.name, info)
        self.pending.append(Pending(PARSE))
        if decision.transform is not None:
            # Learn the statement's columns even if the client never asks.
            out.insert(m.Describe("S", stmt.name).encode())
            self.pending.append(Pending(DESCRIBE_S, prepared=info, swallow=True))

    def _scrub_batch(self, scrub: MessageScrub) -> None:
        """Scrub what the server says until the current batch is over (an over-approximation
        when a pipelining client sends more batches: their messages are scrubbed too)."""
        self.scrub = scrub
        self.scrub_batch = self.sent_batches

    def _attend(self) -> None:
        """Watch the responses that steer row rewriting (RowDescription, CommandComplete,
        the extended protocol's acknowledgements) only while a pending request needs them:
        a plain query without a transform only needs its ReadyForQuery."""
        need = False
        for p in self.pending:
            if (p.kind != QUERY and p.kind != SYNC and p.kind != FUNCTION) \
                    or p.transform is not None:
                need = True
                break
        if need != self.attentive:
            self.attentive = need
            self.be.set_watch(b"T12n3tCIs", need)

    def _rows_may_change(self) -> None:
        """From now on DataRows are looked at (skipped cheaply while no plan applies)."""
        if self.track:
            self.be.watch[0x44] = 1

    def _track_client(self, f: Frame) -> None:
        code = f.code
        if code == 0x42:  # Bind
            portal, stmt, fmts = _bind_info(f.body)
            prepared = self.statements.get(stmt) or PreparedInfo()
            self._set_portal(portal, PortalInfo(prepared, fmts))
            if prepared.scrub is not None:
                self._scrub_batch(prepared.scrub)
            self.pending.append(Pending(BIND))
        elif code == 0x45:  # Execute
            name = m.Reader(f.body, "Execute").cstring()
            self.pending.append(Pending(EXECUTE, portal=self.portals.get(name)))
            if len(self.pending) == 1:
                self._start_execute()
        elif code == 0x44:  # Describe
            d = m.decode_frontend(b"D", f.body)
            assert isinstance(d, m.Describe)
            if d.kind == "S":
                self.pending.append(Pending(DESCRIBE_S, prepared=self.statements.get(d.name)))
            else:
                self.pending.append(Pending(DESCRIBE_P, portal=self.portals.get(d.name)))
        elif code == 0x43:  # Close
            c = m.decode_frontend(b"C", f.body)
            assert isinstance(c, m.Close)
            if c.kind == "S":
                self._set_statement(c.name, None)
            else:
                self._set_portal(c.name, None)
            self.pending.append(Pending(CLOSE))
        elif code == 0x53:  # Sync
            self.pending.append(Pending(SYNC))

    # -------------------------------------------------------------------------- hold

    def _hold(self, out: Splicer, frames: list[Frame], i: int, stmt: Statement,
              decision: Hold) -> None:
        """Forward what precedes the held statement; pause the client until a decision."""
        f = frames[i]
        if f.start >= 0:
            out.keep_to(f.start)
        data = out.result(out.last)
        if self.track:
            self._attend()
        if data is not None and not self.closed:
            self.server.write(data)
        self.held = _HeldWork(out.data, frames, i, stmt)
        self.client.pause_reading()
        self.session.hold(stmt, decision, self._resume)

    @property
    def holding(self) -> bool:
        return self.held is not None

    def client_lost(self) -> None:
        if not self.closed:
            self.session.close()
        self.session.finished()

    def server_lost(self) -> None:
        if self.terminating:  # the client said goodbye; the server closing is the answer
            self.session.close()
        else:
            log.warning("upstream connection lost", extra={"session": self.session.id})
            self.session.close(m.error(
                "08006", "wiregate: connection to the upstream server was lost",
                severity="FATAL"))

    def cancel_hold(self) -> None:
        """A cancel request while a statement waits for approval refuses that statement."""
        self._resume(Deny("57014", "canceling statement due to user request",
                          detail="The statement was waiting for approval and did not run."))

    def _resume(self, decision: Decision) -> None:
        work = self.held
        if work is None or self.closed:
            return
        self.held = None
        if isinstance(decision, Hold):
            decision = Deny("42501", "wiregate: approval did not resolve the hold")
        f = work.frames[work.index]
        out = Splicer(work.data, True)
        out.last = f.start if f.start >= 0 else 0
        self._apply(f, work.statement, decision, out)
        self._continue(out, work.frames, work.index)
        while self.held is None and self.backlog and not self.closed:
            self._client_chunk(self.backlog.popleft())
        if self.held is None and not self.closed:
            self.client.resume_reading()

    # ------------------------------------------------------------------ server → client

    def server_data(self, data: bytes) -> None:
        self.bytes_down += len(data)
        try:
            frames = self.be.scan(data)
        except m.ProtocolViolation as exc:
            self.session.upstream_protocol_error(str(exc))
            return
        if not self.track and not self.denies and not self.be.spanned:
            # Fast path: nothing in this chunk can change; observe and forward it whole.
            for f in frames:
                if f.code == 0x5A:
                    self._ready(f)
                else:
                    self._parameter(f)
            self.client.write(data)
            if self.on_idle is not None and self.idle:
                self.on_idle()
            return
        start = 0
        if self.track and not self.be.spanned:
            # Tracking fast path: while no response needs looking at, only ReadyForQuery and
            # ParameterStatus come here (and errors, notices, notifications and rows under a
            # rewrite, which go the general way from where they appear).
            for f in frames:
                code = f.code
                if code == 0x5A:
                    self._ready(f)
                elif code == 0x53:
                    self._parameter(f)
                else:
                    break
                start += 1
            else:
                self._attend()
                if not self.closed:
                    self.client.write(data)
                if self.on_idle is not None and self.idle:
                    self.on_idle()
                return
        out = Splicer(data, self.be.spanned)
        try:
            for f in frames[start:] if start else frames:
                # A frame inside this chunk needs no keep(): the splicer copies the bytes
                # between replacements itself. One held from an earlier chunk does.
                code = f.code
                if code == 0x5A:  # ReadyForQuery
                    self._ready(f)
                    if f.start < 0:
                        out.keep(f)
                    continue
                if code == RELEASED:
                    out.keep(f)
                    continue
                replacement = None
                if code == 0x45 and self.denies and _DENIED_MARK in f.raw:
                    replacement = self._denied_error()
                    if self.track:
                        self._track_server(f)
                elif self.track:
                    replacement = self._track_server(f)
                elif code == 0x53:
                    self._parameter(f)
                if replacement is not None:
                    out.replace(f, replacement)
                elif f.start < 0:
                    out.keep(f)
        except m.ProtocolViolation as exc:
            self.session.upstream_protocol_error(str(exc))
            return
        if self.track:
            self._attend()
        result = out.result(self.be.forwardable)
        if result is not None and not self.closed:
            self.client.write(result)
        if self.on_idle is not None and self.idle:
            self.on_idle()

    @property
    def idle(self) -> bool:
        return (self.sent_batches == self.done_batches and self.held is None
                and self.be.idle and self.fe.idle)

    def _ready(self, f: Frame) -> None:
        self.session.transaction_status = chr(f.raw[5])
        self.done_batches += 1
        denies = self.denies
        while denies and denies[0][0] < self.done_batches:
            denies.popleft()
        if not denies and not self.track:
            self.be.watch[0x45] = 0
        if self.scrub is not None and self.done_batches > self.scrub_batch:
            self.scrub = self.sticky_scrub
        if f.raw[5] == 0x49 and self.portals and self.done_batches == self.sent_batches:
            # Idle with nothing in flight: every portal ended with the transaction.
            self.portals.clear()
            self.rewriting_portals.clear()
        if self.track:
            while self.pending:
                if self.pending.popleft().kind in _ENDS_BATCH:
                    break
            self._start_execute()

    def _denied_error(self) -> bytes | None:
        """The server failed Wiregate's stand-in: swap in the denial the client must see."""
        denies = self.denies
        while denies and denies[0][0] < self.done_batches:
            denies.popleft()
        if denies and denies[0][0] == self.done_batches:
            return denies.popleft()[1]
        return None

    def _parameter(self, f: Frame) -> None:
        ps = m.decode_backend(b"S", f.body)
        assert isinstance(ps, m.ParameterStatus)
        self.session.parameters[ps.name] = ps.value

    def _pop_until_sync(self) -> None:
        while self.pending and self.pending[0].kind not in _ENDS_BATCH:
            self.pending.popleft()

    def _set_plan(self, plan: dict[int, CellRewrite] | None) -> None:
        self.plan = RowPlan(plan) if plan else None

    def _start_execute(self) -> None:
        """When an Execute becomes the head, switch row rewriting on for its portal."""
        head = self.pending[0] if self.pending else None
        if head is None or head.kind != EXECUTE or head.portal is None:
            self._set_plan(None)
            return
        portal = head.portal
        transform = portal.statement.transform
        if transform is None:
            self._set_plan(None)
            return
        if portal.fields is not None:
            cols = _columns(portal.fields)
        elif portal.statement.fields is not None:
            cols = _with_formats(_columns(portal.statement.fields), portal.result_formats)
        else:
            self._set_plan(None)
            return
        self._set_plan(transform.plan(cols))

    def _scrubbed(self, f: Frame) -> bytes:
        assert self.scrub is not None
        msg = m.decode_backend(bytes(f.raw[:1]), f.body)
        assert isinstance(msg, m.ErrorResponse)   # NoticeResponse is one too
        return type(msg)(self.scrub(dict(msg.fields))).encode()

    def _pop(self) -> None:
        self.pending.popleft()
        self._start_execute()

    def _track_server(self, f: Frame) -> bytes | None:
        """Steer by one backend message; return replacement bytes (b"" drops it) or None."""
        code = f.code
        if code == 0x44:  # DataRows (a run of them): rewritten only under a plan
            if self.plan is None:
                return None
            if f.start < 0:
                return rewrite_rows(f.buf, 0, len(f.buf), self.plan)
            return rewrite_rows(f.buf, f.start, f.end, self.plan)
        if code == 0x53:
            self._parameter(f)
            return None
        scrubbed = None
        if (code == 0x45 or code == 0x4E) and self.scrub is not None:
            scrubbed = self._scrubbed(f)
            if code == 0x4E:
                return scrubbed
        elif code == 0x4E:
            return None
        elif code == 0x41:  # NotificationResponse
            if self.payload is None:
                return None
            note = m.decode_backend(b"A", f.body)
            assert isinstance(note, m.NotificationResponse)
            return m.NotificationResponse(note.process_id, note.channel,
                                          self.payload(note.payload)).encode()
        head = self.pending[0] if self.pending else None
        if head is None:
            return scrubbed
        kind = head.kind
        if code == 0x45:  # ErrorResponse: the server now skips to Sync
            if kind not in (QUERY, FUNCTION):
                self._pop_until_sync()
            self._set_plan(None)
            return scrubbed
        elif code == 0x31 and kind == PARSE:
            self._pop()
        elif code == 0x32 and kind == BIND:
            self._pop()
        elif code == 0x33 and kind == CLOSE:
            self._pop()
        elif code == 0x74 and kind == DESCRIBE_S:  # ParameterDescription
            return b"" if head.swallow else None
        elif code == 0x54:  # RowDescription
            if kind == DESCRIBE_S:
                if head.prepared is not None:
                    head.prepared.fields = f.body
                swallow = head.swallow
                self._pop()
                return b"" if swallow else None
            if kind == DESCRIBE_P:
                if head.portal is not None and head.portal.statement.transform is not None:
                    head.portal.fields = f.body
                self._pop()
            elif kind == QUERY and head.transform is not None:
                self._set_plan(head.transform.plan(_columns(f.body)))
        elif code == 0x6E and kind in (DESCRIBE_S, DESCRIBE_P):  # NoData
            swallow = head.swallow
            self._pop()
            return b"" if swallow else None
        elif code in (0x43, 0x49, 0x73):  # CommandComplete, EmptyQuery, PortalSuspended
            if kind == EXECUTE:
                self._pop()
            elif kind == QUERY:
                self._set_plan(None)
        return None


def _names(f: Frame) -> tuple[str, str]:
    """Portal and statement name of a Bind, nothing else decoded."""
    raw = f.raw
    i = raw.find(0, 5)
    j = raw.find(0, i + 1)
    if i < 0 or j < 0:
        raise m.ProtocolViolation("Bind: malformed message")
    return _decode(bytes(raw[5:i])), _decode(bytes(raw[i + 1:j]))


def _statement(f: Frame) -> Statement:
    """Decode just what the decision needs from a Query, Parse or FunctionCall."""
    raw = f.raw
    code = f.code
    if code == 0x51:
        return Statement(_text(raw, 5, len(raw) - 1), "query")
    body = bytes(raw[5:])
    if code == 0x50:
        i = body.find(0)
        j = body.find(0, i + 1)
        if i < 0 or j < 0 or len(body) < j + 3:
            raise m.ProtocolViolation("Parse: malformed message")
        n = _H.unpack_from(body, j + 1)[0]
        if n < 0 or len(body) != j + 3 + 4 * n:
            raise m.ProtocolViolation("Parse: malformed parameter types")
        types = struct.unpack_from(f"!{n}I", body, j + 3) if n else ()
        return Statement(_decode(body[i + 1:j]), "parse", name=_decode(body[:i]),
                         param_types=types)
    msg = m.decode_frontend(b"F", body)
    assert isinstance(msg, m.FunctionCall)
    return Statement("", "function_call", function_oid=msg.function_oid)


def _decode(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def _text(raw: bytes | memoryview, start: int, end: int) -> str:
    b = bytes(raw[start:end])
    if end < start or raw[end] != 0 or b"\0" in b:
        raise m.ProtocolViolation("Query: malformed string")
    return _decode(b)
