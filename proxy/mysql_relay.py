"""The MySQL/MariaDB relay: commands judged on the way up, answers rewritten on the way down.

Every command is one or more client packets starting at sequence id 0. COM_QUERY and
COM_STMT_PREPARE go to the policy before a byte is forwarded; a refusal is an ERR packet the
client reads as the command's answer, and the session goes on. Answers are followed packet by
packet (``protocols.mysql.responses``) so the relay knows which packets are rows; rows of a
statement whose decision carries a transform are rewritten cell by cell (text rows for
COM_QUERY, binary rows for COM_STMT_EXECUTE and COM_STMT_FETCH), everything else is passed
through as it came. Clients may pipeline commands: answers are matched to commands in order,
and an answer Wiregate writes itself (a refusal) waits its turn behind the ones in flight.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import TokenError

from policies import mysql_masking
from policies.decision import Allow, Decision, Deny, Hold, MessageScrub, SessionInfo, Statement
from policies.guard import PARSE_RULE, GuardPolicy, mysql_error
from policies.guardrails import Refusal
from policies.mysql_masking import MySQLColumn
from protocols.mysql import messages as my
from protocols.mysql import responses as rs
from protocols.mysql.binary import rewrite_binary_row
from protocols.mysql.packets import MAX_PACKET, PacketError, encode
from protocols.mysql.rows import RowPlan, rewrite_binary_rows, rewrite_text_rows

if TYPE_CHECKING:
    from proxy.mysql_session import MySQLSession

log = logging.getLogger("wiregate.mysql")
HIGH_WATER = 256 * 1024

COM_PROCESS_KILL = 0x0C
# Commands refused outright: replication, server administration, and MariaDB's bulk execution
# (not offered in the greeting; its rows would bypass the prepared statement's decision).
_REFUSED = {
    0x05: "COM_CREATE_DB", 0x06: "COM_DROP_DB", 0x07: "COM_REFRESH", 0x08: "COM_SHUTDOWN",
    0x0A: "COM_PROCESS_INFO", 0x0D: "COM_DEBUG", 0x12: "COM_BINLOG_DUMP",
    0x13: "COM_TABLE_DUMP", 0x15: "COM_REGISTER_SLAVE", 0x1E: "COM_BINLOG_DUMP_GTID",
    0xFA: "COM_STMT_BULK_EXECUTE",
}
_NO_ANSWER = frozenset({my.COM_STMT_CLOSE, my.COM_STMT_SEND_LONG_DATA})
_EXPECT = {
    my.COM_INIT_DB: rs.EXPECT_OK, my.COM_PING: rs.EXPECT_OK, my.COM_STMT_RESET: rs.EXPECT_OK,
    my.COM_RESET_CONNECTION: rs.EXPECT_OK, my.COM_SET_OPTION: rs.EXPECT_OK_OR_EOF,
    my.COM_STATISTICS: rs.EXPECT_STRING, my.COM_FIELD_LIST: rs.EXPECT_FIELDS,
}
SERVER_STATUS_IN_TRANS = 0x0001
_U32 = struct.Struct("<I")
LAST_PREPARED = 0xFFFFFFFF    # MariaDB: COM_STMT_EXECUTE of the statement prepared just before
LARGE_STATEMENT = 256 * 1024  # judged off the event loop (see MySQLRelay._judge_aside)
ER_NO_SUCH_THREAD = 1094
ER_KILL_DENIED = 1095
ER_NOT_ALLOWED_COMMAND = 1148
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_UNKNOWN_COM = 1047


def err_packet(errno: int, sqlstate: str, message: str, seq: int) -> bytes:
    return encode(my.ERR(errno, message, sqlstate).encode(), seq)


def refusal_of(deny: Deny, policy: object, info: SessionInfo) -> tuple[int, str]:
    """A policy's refusal as a MySQL error number and SQLSTATE: 1064 for what cannot be
    parsed, 1142 for a refused write to a table, 1227 for the rest (the rule's kind, looked
    up in the session's profile, says which)."""
    if deny.rule == PARSE_RULE:
        return 1064, "42000"
    kind = ""
    if isinstance(policy, GuardPolicy):
        try:
            kind = next((r.kind for r in policy.profile(info).rules if r.id == deny.rule), "")
        except LookupError:
            kind = ""
    errno, sqlstate, _ = mysql_error(Refusal(deny.rule, kind, deny.message))
    return errno, sqlstate


@dataclass(slots=True)
class _Prepared:
    """A statement prepared through the relay: the decision its rows follow."""

    sql: str
    transform: Any = None
    scrub: MessageScrub | None = None
    types: list[int] = field(default_factory=list)
    plan: dict[int, Callable[[bytes | None], bytes | None]] = field(default_factory=dict)
    defs: list[bytes] = field(default_factory=list)   # the column definitions planned for
    row_plan: RowPlan | None = None
    type_bytes: bytes = b""
    execution: _Pending | None = None   # what its plain executions wait as, made once


@dataclass(slots=True)
class _Pending:
    """One answer the client waits for, in order."""

    expect: int
    seq: int                           # the sequence id the client expects first
    transform: Any = None
    scrub: MessageScrub | None = None
    binary: bool = False
    cursor: bool = False
    stmt: _Prepared | None = None
    synthetic: bytes | None = None     # written by Wiregate: no server answer to wait for
    internal: bool = False             # Wiregate's own command: the answer is swallowed
    prepare_sql: str = ""
    infile: bool = False               # answering a LOCAL INFILE request


class MySQLRelay:
    """Both directions of one MySQL session, as protocol callbacks."""

    def __init__(self, session: MySQLSession, client: Any, server: Any) -> None:
        self.session = session
        self.client = client
        self.server = server
        self.caps = session.capabilities
        self.tracker = rs.ResponseTracker(bool(self.caps & my.CLIENT_DEPRECATE_EOF))
        self.pending: deque[_Pending] = deque()
        self.prepared: dict[int, _Prepared] = {}
        self.last_prepared = 0
        self.cbuf = bytearray()
        self.sbuf = bytearray()
        self.out_seq = 0                  # the next sequence id towards the client
        self.held = False
        self.closed = False
        self.terminating = False
        self.status = 2
        self.columns: list[bytes] = []    # the current result's column definitions
        self.plan: dict[int, Callable[[bytes | None], bytes | None]] = {}
        self.row_plan: RowPlan | None = None     # the text-row walk's form of ``plan``
        self.planned = False
        self.types: list[int] = []
        self.type_bytes = b""
        self.bytes_up = 0
        self.bytes_down = 0
        self.on_idle: Callable[[], None] | None = None
        self.max_packet = session.listener.max_packet_size
        self.tracker_error = False        # Wiregate's own command failed upstream
        self.error_seq = 1                # where an error about the client's command goes
        self._rewritten = b""             # the rows _rows rewrote last
        self._last_server_seq = 0

    # -- wiring -----------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        return self.held

    def client_lost(self) -> None:
        if not self.closed:
            self.terminating = True
            self.close()
        self.session.finished()

    def server_lost(self) -> None:
        if self.terminating:
            self.close()
            return
        log.warning("upstream connection lost", extra={"session": self.session.id})
        self.close(my.ERR(2013, "wiregate: lost connection to the upstream server",
                          "08S01").encode() if self.pending else None)

    @property
    def idle(self) -> bool:
        return not self.pending and not self.held and not self.cbuf

    @property
    def in_transaction(self) -> bool:
        return bool(self.status & SERVER_STATUS_IN_TRANS)

    def close(self, final: bytes | None = None, linger: float = 0.0) -> None:
        """Close both sides. ``linger``: the client may still be sending the command that
        failed; its bytes are read and dropped for that long, so closing with unread data
        (a reset) does not destroy the error before the client reads it."""
        if self.closed:
            return
        self.closed = True
        if final is not None and not self.pending and not self.client.is_closing():
            self.client.write(encode(final, self.out_seq))
        if not self.server.is_closing():
            if not self.pending and not self.terminating:
                self.server.write(encode(bytes([my.COM_QUIT]), 0))
            self.server.close()
        if linger > 0:
            asyncio.get_running_loop().call_later(linger, self.client.close)
        else:
            self.client.close()

    def _fail(self, message: str, upstream: bool, errno: int = 2027) -> None:
        side = "upstream" if upstream else "client"
        log.warning(f"{side} protocol violation", extra={"session": self.session.id,
                                                         "error": message})
        text = f"wiregate: invalid data from {'the upstream server' if upstream else 'client'}"
        if not upstream:
            self.out_seq = self.error_seq   # the answer to the command that failed
        self.close(my.ERR(errno, f"{text}: {message}", "08S01").encode(),
                   linger=0.0 if upstream else 1.0)

    # -- client → server ------------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        if self.closed:
            return
        self.bytes_up += len(data)
        self.session.touch()
        if self.held or self.cbuf:
            self.cbuf += data
            if self.held:
                return
            buf: bytes | bytearray = self.cbuf
        else:
            # The commonest chunk of all: one whole COM_STMT_EXECUTE of a statement prepared
            # here, nothing in flight. Its decision was made at the prepare.
            size = len(data)
            if size > 9 and data[4] == my.COM_STMT_EXECUTE and not self.pending \
                    and data[0] | data[1] << 8 | data[2] << 16 == size - 4 < MAX_PACKET:
                stmt = self.prepared.get(_U32.unpack_from(data, 5)[0])
                if stmt is not None:
                    seq = (data[3] + 1) & 0xFF
                    self.error_seq = seq
                    cursor = bool(data[9] & 0x07)
                    wait = stmt.execution
                    if wait is None or wait.seq != seq or wait.cursor != cursor:
                        wait = stmt.execution = _Pending(
                            rs.EXPECT_RESULT, seq, stmt.transform, stmt.scrub, binary=True,
                            cursor=cursor, stmt=stmt)
                    self._push(wait)
                    self.server.write(data)
                    return
            buf = data       # the usual case, whole commands in one chunk: no copy
        try:
            self._commands(buf)
        except PacketError as exc:
            self._fail(str(exc), upstream=False, errno=exc.errno)

    def _commands(self, buf: bytes | bytearray | None = None) -> None:
        if buf is None:
            buf = self.cbuf
        pos = 0
        forward: list[bytes] = []
        size = len(buf)
        while not self.held and size - pos >= 4:
            n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + n
            seq = buf[pos + 3]
            self.error_seq = (seq + 1) & 0xFF
            if n == MAX_PACKET:      # a command of 16 MiB or more: reassemble it
                parts = [bytes(buf[pos + 4:end])]
                while end <= size and n == MAX_PACKET:
                    if size - end < 4:
                        end = size + 1
                        break
                    n = buf[end] | buf[end + 1] << 8 | buf[end + 2] << 16
                    seq = buf[end + 3]
                    parts.append(bytes(buf[end + 4:end + 4 + n]))
                    end = end + 4 + n
                if end > size:
                    if sum(map(len, parts)) > self.max_packet:
                        raise PacketError("command larger than max_packet_size", errno=1153)
                    break
                payload = b"".join(parts)
            else:
                if end > size:
                    if n > self.max_packet:
                        raise PacketError("command larger than max_packet_size", errno=1153)
                    break
                payload = bytes(buf[pos + 4:end])
            raw = bytes(buf[pos:end])
            pos = end
            if not payload:
                raise PacketError("empty command packet")
            self._command(payload, raw, seq, forward)
        self._keep(buf, pos, client=True)
        if forward and not self.closed:
            self.server.write(b"".join(forward))

    def _command(self, payload: bytes, raw: bytes, seq: int, forward: list[bytes]) -> None:
        cmd = payload[0]
        answer_seq = (seq + 1) & 0xFF
        if cmd == my.COM_QUERY:
            sql = self._text(payload[1:])
            if sql is None:
                self._synthetic(1064, "42000", "wiregate: blocked by rule wiregate.parse: the "
                                "statement is not valid text in the connection's character set",
                                answer_seq)
                return
            kill = _kill_target(sql)
            if kill is not None:
                self._kill(kill, answer_seq, forward)
                return
            self._judge(Statement(sql, "query"), raw, answer_seq, forward, rs.EXPECT_RESULT)
            return
        if cmd == my.COM_STMT_PREPARE:
            sql = self._text(payload[1:])
            if sql is None:
                self._synthetic(1064, "42000", "wiregate: blocked by rule wiregate.parse: the "
                                "statement is not valid text in the connection's character set",
                                answer_seq)
                return
            self._judge(Statement(sql, "parse"), raw, answer_seq, forward, rs.EXPECT_PREPARE)
            return
        if cmd == my.COM_STMT_EXECUTE or cmd == my.COM_STMT_FETCH:
            if len(payload) < 5:
                raise PacketError("statement command too short")
            stmt_id = _U32.unpack_from(payload, 1)[0]
            if stmt_id == LAST_PREPARED:
                stmt_id = self.last_prepared
            stmt = self.prepared.get(stmt_id)
            if stmt is None:
                # Not prepared through Wiregate (or closed): the server answers with its own
                # error; rows, if any, are masked whole.
                stmt = _Prepared("", self._mask_all(), None)
            if cmd == my.COM_STMT_EXECUTE:
                cursor = len(payload) > 5 and bool(payload[5] & 0x07)
                self._push(_Pending(rs.EXPECT_RESULT, answer_seq, stmt.transform, stmt.scrub,
                                    binary=True, cursor=cursor, stmt=stmt))
            else:
                self._push(_Pending(rs.EXPECT_FETCH, answer_seq, stmt.transform, stmt.scrub,
                                    binary=True, stmt=stmt))
            forward.append(raw)
            return
        if cmd in _NO_ANSWER:
            if cmd == my.COM_STMT_CLOSE and len(payload) >= 5:
                self.prepared.pop(int.from_bytes(payload[1:5], "little"), None)
            forward.append(raw)
            return
        if cmd == my.COM_QUIT:
            self.terminating = True
            forward.append(raw)
            return
        if cmd == my.COM_INIT_DB:
            name = self._text(payload[1:])
            if name is None:
                self._synthetic(1049, "42000", "wiregate: the database name is not valid text",
                                answer_seq)
                return
            hook = getattr(self.session.policy, "use_database", None)
            if hook is not None:
                hook(self.session.info, name)
        if cmd in _EXPECT:
            self._push(_Pending(_EXPECT[cmd], answer_seq))
            forward.append(raw)
            if cmd == my.COM_RESET_CONNECTION:
                self.prepared.clear()
                self._setup(forward)
            return
        if cmd == COM_PROCESS_KILL:
            if len(payload) < 5:
                raise PacketError("COM_PROCESS_KILL too short")
            self._kill((False, int.from_bytes(payload[1:5], "little")), answer_seq, forward)
            return
        if cmd == my.COM_CHANGE_USER:
            self._synthetic(ER_SPECIFIC_ACCESS_DENIED, "42000", "wiregate: COM_CHANGE_USER is "
                            "not supported: the session keeps its login; reconnect to log in "
                            "as another user", answer_seq)
            return
        name = _REFUSED.get(cmd)
        if name is not None:
            self._synthetic(ER_SPECIFIC_ACCESS_DENIED, "42000",
                            f"wiregate: {name} is not allowed through Wiregate", answer_seq)
            return
        self._synthetic(ER_UNKNOWN_COM, "08S01", f"wiregate: unknown command 0x{cmd:02x}",
                        answer_seq)

    def _text(self, data: bytes) -> str | None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _setup(self, forward: list[bytes]) -> None:
        """COM_RESET_CONNECTION puts the session's variables back to the server's defaults:
        the profile's settings (read-only, time limit) go again, right behind it."""
        for sql in self.session.setup:
            self._push(_Pending(rs.EXPECT_RESULT, 1, internal=True))
            forward.append(encode(bytes([my.COM_QUERY]) + sql.encode(), 0))

    # -- the decision --------------------------------------------------------------------

    def _judge(self, statement: Statement, raw: bytes, answer_seq: int,
               forward: list[bytes], expect: int) -> None:
        if len(statement.sql) > LARGE_STATEMENT:
            self._judge_aside(statement, raw, answer_seq, forward, expect)
            return
        decision = self.session.decide(statement)
        if isinstance(decision, Hold):
            self._hold(statement, decision, raw, answer_seq, forward, expect)
            return
        self._decided(statement, decision, raw, answer_seq, forward, expect)

    def _decided(self, statement: Statement, decision: Decision, raw: bytes, answer_seq: int,
                 forward: list[bytes], expect: int) -> None:
        if isinstance(decision, Deny):
            self.session.denied(statement, decision)
            errno, sqlstate = refusal_of(decision, self.session.policy, self.session.info)
            message = decision.message
            if decision.hint:
                message += f" (hint: {decision.hint})"
            self._synthetic(errno, sqlstate, message, answer_seq)
            return
        if isinstance(decision, Hold):   # a second hold after a catalog re-read
            self._synthetic(ER_SPECIFIC_ACCESS_DENIED, "42000",
                            "wiregate: statement refused: it is still held", answer_seq)
            return
        assert isinstance(decision, Allow)
        pending = _Pending(expect, answer_seq, decision.transform, decision.scrub)
        if expect == rs.EXPECT_PREPARE:
            pending.prepare_sql = statement.sql
        self._push(pending)
        forward.append(raw)

    def _judge_aside(self, statement: Statement, raw: bytes, answer_seq: int,
                     forward: list[bytes], expect: int) -> None:
        """A statement of megabytes takes sqlglot seconds to parse: it is judged on a worker
        thread while this session waits, so the event loop keeps serving the others."""
        if forward:
            self.server.write(b"".join(forward))
            forward.clear()
        self.held = True
        self.client.pause_reading()
        loop = asyncio.get_running_loop()

        async def judge() -> None:
            decision = await loop.run_in_executor(None, self.session.decide, statement)
            if self.closed:
                return
            self.held = False
            out: list[bytes] = []
            if isinstance(decision, Hold):
                self._hold(statement, decision, raw, answer_seq, out, expect)
            else:
                self._decided(statement, decision, raw, answer_seq, out, expect)
                self._resume(out)

        self.session.worker.spawn(judge())

    def _resume(self, out: list[bytes]) -> None:
        if out:
            self.server.write(b"".join(out))
        self.client.resume_reading()
        if self.cbuf:
            try:
                self._commands()
            except PacketError as exc:
                self._fail(str(exc), upstream=False, errno=exc.errno)

    def _hold(self, statement: Statement, decision: Hold, raw: bytes, answer_seq: int,
              forward: list[bytes], expect: int) -> None:
        """Forward what came before; stop reading the client until the decision."""
        if forward:
            self.server.write(b"".join(forward))
            forward.clear()
        self.held = True
        self.client.pause_reading()

        def resume(result: Decision) -> None:
            if self.closed:
                return
            self.held = False
            out: list[bytes] = []
            self._decided(statement, result, raw, answer_seq, out, expect)
            self._resume(out)

        self.session.hold(statement, decision, resume)

    def _mask_all(self) -> Any:
        policy = self.session.policy
        if isinstance(policy, GuardPolicy):
            state = policy._state(self.session.info)
            if state.profile.masking is not None:
                return policy._mask_all(state)
        return None

    # -- KILL ------------------------------------------------------------------------------

    def _kill(self, target: tuple[bool, int] | str, answer_seq: int,
              forward: list[bytes]) -> None:
        """KILL [QUERY] <id> names a connection id Wiregate gave out: it becomes a KILL of
        that session's upstream thread, for sessions of the same login only."""
        if isinstance(target, str):
            self._synthetic(ER_SPECIFIC_ACCESS_DENIED, "42000",
                            f"wiregate: blocked by rule wiregate.kill: {target}", answer_seq)
            return
        query_only, conn_id = target
        worker = self.session.worker
        other = worker.mysql_sessions.get(conn_id)
        if other is None and worker.forward_mysql_kill(conn_id, query_only,
                                                       self.session.info.user):
            # Another worker's session: that worker checks the login and kills.
            self._push(_Pending(rs.EXPECT_OK, answer_seq, synthetic=encode(
                my.OK(status=self.status).encode(), answer_seq)))
            return
        if other is None or other.up is None:
            self._synthetic(ER_NO_SUCH_THREAD, "HY000", f"Unknown thread id: {conn_id}",
                            answer_seq)
            return
        if other.info.user != self.session.info.user:
            self._synthetic(ER_KILL_DENIED, "HY000", f"You are not owner of thread {conn_id} "
                            "(wiregate: KILL reaches sessions of the same login only)",
                            answer_seq)
            return
        mine, theirs = self.session.upstream, other.upstream
        if other is not self.session and (mine is None or theirs is None or (
                mine.host, mine.port, mine.user) != (theirs.host, theirs.port, theirs.user)):
            # Another server: the KILL goes over a connection of its own.
            worker.kill_mysql(other, query_only)
            self._push(_Pending(rs.EXPECT_OK, answer_seq, synthetic=encode(
                my.OK(status=self.status).encode(), answer_seq)))
            return
        sql = f"KILL {'QUERY ' if query_only else ''}{other.up.connection_id}"
        log.info("kill", extra={"session": self.session.id, "target": other.id,
                                "query_only": query_only})
        self._push(_Pending(rs.EXPECT_RESULT, answer_seq))
        forward.append(encode(bytes([my.COM_QUERY]) + sql.encode(), 0))

    # -- answers written by Wiregate ------------------------------------------------------

    def _synthetic(self, errno: int, sqlstate: str, message: str, seq: int) -> None:
        self._push(_Pending(rs.EXPECT_OK, seq, synthetic=err_packet(errno, sqlstate, message,
                                                                    seq)))

    def _push(self, pending: _Pending) -> None:
        self.pending.append(pending)
        if len(self.pending) == 1:
            self._begin()

    def _begin(self) -> None:
        """The head of the queue is the answer being read now (or written by Wiregate)."""
        while self.pending and not self.closed:
            head = self.pending[0]
            if head.synthetic is not None:
                self.client.write(head.synthetic)
                self.pending.popleft()
                continue
            self.out_seq = head.seq
            self.tracker.start(head.expect, head.cursor)
            self._next_result()
            if head.expect == rs.EXPECT_FETCH and head.stmt is not None:
                self.types = head.stmt.types
                self.type_bytes = head.stmt.type_bytes
                self.plan = head.stmt.plan
                self.row_plan = head.stmt.row_plan
            return
        if not self.pending and self.on_idle is not None:
            self.on_idle()

    # -- server → client ----------------------------------------------------------------

    def server_data(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            if self.sbuf:
                self.sbuf += data
                self._answers(self.sbuf)
                return
            pending = self.pending
            size = len(data)
            if len(pending) != 1 or size < 4 or data[3] != self.out_seq:
                self._answers(data)   # answers that end in the chunk: passed on without a copy
                return
            head = pending[0]
            if head.internal:
                self._answers(data)
                return
            # The commonest answers: one the client waits for alone, whole in the chunk. Its
            # packets are passed over in one call and it goes on as it came, or with its rows
            # rewritten in a second; wherever this stops short, the general walk goes on.
            tracker = self.tracker
            watch = head.transform is not None or head.scrub is not None
            stop, count = rs.skip(tracker, data, 0, size, self.columns if watch else None,
                                  watch)
            if not count:
                self._answers(data)
                return
            self._passed(head, count, watch)
            run = 0
            out: list[bytes] = []
            if watch and not tracker.done and tracker.phase == rs.ROWS_PHASE \
                    and self.row_plan is not None:
                rows_end = self._rows(head, data, stop, self.row_plan)
                if rows_end > stop:
                    out.append(data[:stop])
                    out.append(self._rewritten)
                    run = rows_end
                    stop, count = rs.skip(tracker, data, rows_end, size, self.columns,
                                          True)
                    if count:
                        self._passed(head, count, watch)
            if not tracker.done:
                self._answers(data, stop, run, out)
            elif stop < size:
                self._answered(head, out, data, run, stop)
                if not self.closed:
                    self._answers(data, stop, stop, out)
            else:                     # the answer ends the chunk: it goes out in one write
                pending.popleft()
                if out:
                    if run < stop:
                        out.append(data[run:stop])
                    data = b"".join(out)
                self.bytes_down += len(data)
                self.client.write(data)
                if self.on_idle is not None:
                    self.on_idle()
        except PacketError as exc:
            self._fail(str(exc), upstream=True)

    def _keep(self, buf: bytes | bytearray, pos: int, client: bool) -> None:
        """What is left of a chunk after ``pos`` waits for the rest of its packet."""
        kept = self.cbuf if client else self.sbuf
        if buf is kept:
            del kept[:pos]
        elif pos < len(buf):
            if client:
                self.cbuf = bytearray(buf[pos:])
            else:
                self.sbuf = bytearray(buf[pos:])

    def _answers(self, buf: bytes | bytearray, pos: int = 0, run: int = 0,
                 out: list[bytes] | None = None) -> None:
        """Walk the chunk from ``pos``; bytes from ``run`` are passed through unchanged, after
        ``out`` (what was already decided of this chunk)."""
        size = len(buf)
        if out is None:
            out = []
        tracker = self.tracker
        skip = rs.skip
        while True:
            if not self.pending:
                if pos < size:
                    # Not an answer to anything (the server closing a killed connection
                    # says so first): passed on.
                    out.append(bytes(buf[run:size]))
                    run = pos = size
                break
            head = self.pending[0]
            if size - pos < 4:
                break
            n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + n
            if end > size:
                break
            # Packets nobody rewrites are passed over, counted, not copied. For an answer whose
            # rows are rewritten, the pass stops at rows, errors and each result's end.
            moved = False      # passed over up to the rows to rewrite, which come next
            if not head.internal and buf[pos + 3] == self.out_seq:
                watch = head.transform is not None or head.scrub is not None
                defs = self.columns if watch else None
                # rows stop the pass while a plan may rewrite them
                rows = watch and (self.row_plan is not None or not self.planned)
                stop, count = skip(tracker, buf, pos, size, defs, rows)
                if count:
                    pos = stop
                    self._passed(head, count, watch)
                    if tracker.done:
                        self._answered(head, out, buf, run, pos)
                        run = pos
                        if self.closed:
                            return
                    if tracker.done or self.row_plan is None:
                        continue
                    moved = True
            # Rows that need nothing: the fast path.
            if tracker.phase == rs.ROWS_PHASE and not self.plan and not head.internal \
                    and buf[pos + 3] == self.out_seq and 0 < n < MAX_PACKET:
                first = buf[pos + 4]
                if first < 0xFE or (first == 0xFE and n >= 9 and not tracker.deprecate_eof):
                    self.out_seq = (self.out_seq + 1) & 0xFF
                    pos = end
                    continue
            # Rows to rewrite: the whole run of them in one call (C when built).
            plan = self.row_plan
            if plan is not None and tracker.phase == rs.ROWS_PHASE and not head.internal:
                stop = self._rows(head, buf, pos, plan)
                if stop > pos:
                    if run < pos:
                        out.append(bytes(buf[run:pos]))
                    out.append(self._rewritten)
                    run = pos = stop
                    continue
            if moved:          # the packet at pos is not a row: the loop reads it afresh
                continue
            if n == MAX_PACKET:
                parts = [bytes(buf[pos + 4:end])]
                scan = end
                complete = False
                while True:
                    if size - scan < 4:
                        break
                    m = buf[scan] | buf[scan + 1] << 8 | buf[scan + 2] << 16
                    if scan + 4 + m > size:
                        break
                    parts.append(bytes(buf[scan + 4:scan + 4 + m]))
                    scan += 4 + m
                    if m < MAX_PACKET:
                        complete = True
                        break
                if not complete:
                    break
                payload = b"".join(parts)
                count = len(parts)
                end = scan
            else:
                payload = bytes(buf[pos + 4:end])
                count = 1
            self._last_server_seq = buf[pos + 3]
            new = self._answer(head, payload)
            if head.internal:
                if run < pos:
                    out.append(bytes(buf[run:pos]))
                run = end
            elif new is not None or count > 1 or buf[pos + 3] != self.out_seq:
                if run < pos:
                    out.append(bytes(buf[run:pos]))
                body = payload if new is None else new
                out.append(encode(body, self.out_seq))
                self.out_seq = (self.out_seq + _packets(len(body))) & 0xFF
                run = end
            else:
                self.out_seq = (self.out_seq + 1) & 0xFF
            pos = end
            if tracker.done:
                self._answered(head, out, buf, run, pos)
                run = pos
                if self.closed:
                    return
        if run < pos:
            out.append(bytes(buf[run:pos]))
        self._keep(buf, pos, client=False)
        if out:
            data = b"".join(out)
            self.bytes_down += len(data)
            self.client.write(data)

    def _passed(self, head: _Pending, count: int, watch: bool) -> None:
        """``count`` packets of the head's answer were passed over: the sequence ids and
        status follow them, and a watched answer's rows are planned once their column
        definitions are all in."""
        tracker = self.tracker
        self.out_seq = (self.out_seq + count) & 0xFF
        self.status = tracker.status
        if watch:
            if len(self.columns) == tracker.columns and self.row_plan is None \
                    and not self.planned and tracker.phase == rs.ROWS_PHASE:
                self._plan(head)
            if tracker.more and tracker.phase != rs.ROWS_PHASE:
                self._next_result()

    def _rows(self, head: _Pending, buf: bytes | bytearray, pos: int, plan: RowPlan) -> int:
        """Rewrite the run of whole row packets from ``pos`` (C when built): where the run
        ends, its new bytes in ``_rewritten``."""
        try:
            if head.binary:
                rows, stop, seq = rewrite_binary_rows(
                    buf, pos, self.out_seq, self.type_bytes, plan.columns, plan.rewrites,
                    plan.memos, plan.specs, plan.limits, self.tracker.deprecate_eof)
            else:
                rows, stop, seq = rewrite_text_rows(
                    buf, pos, self.out_seq, plan.columns, plan.rewrites, plan.memos,
                    plan.specs, plan.limits, self.tracker.deprecate_eof)
        except ValueError as exc:
            raise PacketError(str(exc), errno=2027) from None
        self._rewritten = rows
        self.out_seq = seq
        return int(stop)

    def _answered(self, head: _Pending, out: list[bytes], buf: bytes | bytearray, run: int,
                  pos: int) -> None:
        """The head's answer is complete: flush it and move on to the next."""
        if run < pos:
            out.append(bytes(buf[run:pos]))
        if head.infile:
            # The server's answer to the empty file is swallowed; the client learns why.
            out.append(err_packet(ER_NOT_ALLOWED_COMMAND, "42000", "wiregate: blocked by "
                                  "rule wiregate.local-infile: LOAD DATA LOCAL INFILE is not "
                                  "allowed (the server was sent an empty file)",
                                  self.out_seq))
        failed, self.tracker_error = self.tracker_error, False
        if head.internal and not head.infile and failed:
            if out:
                self.client.write(b"".join(out))
                out.clear()
            log.error("profile settings failed after COM_RESET_CONNECTION; session closed",
                      extra={"session": self.session.id})
            self.close(my.ERR(ER_SPECIFIC_ACCESS_DENIED, "wiregate: the profile's session "
                              "settings could not be applied again", "42000").encode())
            return
        self.pending.popleft()
        if out and self.pending and self.pending[0].synthetic is not None:
            self.client.write(b"".join(out))
            self.bytes_down += sum(map(len, out))
            out.clear()
        self._begin()

    def _answer(self, head: _Pending, payload: bytes) -> bytes | None:
        """One packet of the head's answer: the payload to send instead, or None to pass
        it on unchanged."""
        tracker = self.tracker
        event = tracker.feed(payload)
        if event == rs.ROW:
            if self.plan:
                if head.binary:
                    return rewrite_binary_row(payload, self.types, self.plan)
                return my.rewrite_text_row(payload, sorted(self.plan.items()))
            return None
        if event == rs.COLUMN:
            if head.transform is not None and head.expect == rs.EXPECT_RESULT:
                self._column(head, payload)
            return None
        if event == rs.ERR:
            if head.internal:
                self.tracker_error = True
                return None
            if head.scrub is not None:
                err = my.ERR.decode(payload)
                fields = head.scrub({"M": err.message, "C": err.sqlstate})
                return my.ERR(err.errno, fields.get("M", ""), err.sqlstate).encode()
            return None
        if event in (rs.OK, rs.END):
            self.status = tracker.status
            if tracker.more:
                self._next_result()
            return None
        if event == rs.PREPARED:
            stmt = _Prepared(head.prepare_sql, head.transform, head.scrub)
            self.prepared[tracker.statement_id] = stmt
            self.last_prepared = tracker.statement_id
            return None
        if event == rs.INFILE:
            # Not offered to the server, so not expected; answered with an empty file.
            if head.stmt is not None and head.stmt.execution is head:
                head.stmt.execution = None      # changed below: not to be used again
            head.infile = True
            self.server.write(encode(b"", (self._last_server_seq + 1) & 0xFF))
            tracker.start(rs.EXPECT_OK)
            head.internal = True
            return None
        return None

    def _column(self, head: _Pending, payload: bytes) -> None:
        """Collect a result's column definitions; with the last one, plan the rewrite."""
        self.columns.append(payload)
        if len(self.columns) == self.tracker.columns:
            self._plan(head)

    def _next_result(self) -> None:
        """Another result set follows in the same answer: planned afresh."""
        self.columns = []
        self.plan = {}
        self.row_plan = None
        self.planned = False

    def _plan(self, head: _Pending) -> None:
        """The rewrite of a result's rows, from its column definitions. A prepared statement
        executed again with the same definitions keeps its plan."""
        self.planned = True
        defs = self.columns
        stmt = head.stmt
        if stmt is not None and stmt.defs == defs:
            self.types, self.plan, self.row_plan = stmt.types, stmt.plan, stmt.row_plan
            self.type_bytes = stmt.type_bytes
            return
        columns = []
        for i, raw in enumerate(defs):
            d = my.ColumnDefinition.decode(raw)
            columns.append(MySQLColumn(i, d.schema, d.table, d.org_table, d.name, d.org_name,
                                       d.type, d.flags, d.charset, d.decimals, d.length))
        self.types = [c.type for c in columns]
        self.plan = mysql_masking.plan(head.transform, columns, head.binary)
        self.row_plan = RowPlan(self.plan) if self.plan else None
        self.type_bytes = bytes(self.types)
        if stmt is not None:
            stmt.defs, stmt.types, stmt.plan = list(defs), self.types, self.plan
            stmt.row_plan, stmt.type_bytes = self.row_plan, self.type_bytes


def _packets(size: int) -> int:
    return size // MAX_PACKET + 1


def _kill_target(sql: str) -> tuple[bool, int] | str | None:
    """``KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`` as (query only, id); another KILL form as
    the reason it is refused; None when the statement is not a KILL."""
    try:
        tokens = MySQL().tokenize(sql)
    except (TokenError, ValueError):
        return None
    words = [t.text.upper() for t in tokens if t.text != ";"]
    if not words or words[0] != "KILL":
        return None
    rest = words[1:]
    if rest and rest[0] in ("HARD", "SOFT"):
        rest = rest[1:]
    query_only = False
    if rest and rest[0] in ("CONNECTION", "QUERY"):
        query_only = rest[0] == "QUERY"
        rest = rest[1:]
    if len(rest) == 1 and rest[0].isdigit():
        return query_only, int(rest[0])
    return "only KILL [QUERY] <connection id> of the same login's sessions is allowed"
