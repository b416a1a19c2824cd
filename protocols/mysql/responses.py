"""Where a server's answer to one command ends, packet by packet. Sans-IO.

MySQL answers every command with a sequence of packets whose meaning depends on the command
and on what came before (a column count, then that many column definitions, then rows, then
a terminator, and maybe another result set). ``ResponseTracker`` is told what the command
expects, is fed each reassembled payload, and says what the payload is; a relay uses that to
know which packets are rows (to rewrite) and when the answer is complete, without decoding
anything else. Both EOF modes are handled (``CLIENT_DEPRECATE_EOF``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from protocols.mysql.messages import SERVER_MORE_RESULTS_EXISTS, lenenc_int_at
from protocols.mysql.packets import PacketError

# What the command expects.
EXPECT_RESULT = 1      # COM_QUERY, COM_STMT_EXECUTE: OK | ERR | LOCAL INFILE | result set(s)
EXPECT_PREPARE = 2     # COM_STMT_PREPARE: prepare OK + parameter and column definitions | ERR
EXPECT_FETCH = 3       # COM_STMT_FETCH: rows + terminator | ERR
EXPECT_OK = 4          # INIT_DB, PING, RESET_CONNECTION, STMT_RESET, ...: OK | ERR
EXPECT_FIELDS = 5      # COM_FIELD_LIST: column definitions + EOF | ERR
EXPECT_STRING = 6      # COM_STATISTICS: one string packet
EXPECT_OK_OR_EOF = 7   # COM_SET_OPTION: EOF (old servers) | OK | ERR

# What a payload is.
OK = 1            # an OK packet ending the response, or one result of several (``more``)
ERR = 2
INFILE = 3        # LOCAL INFILE request: the server waits for file data
COLUMN_COUNT = 4
COLUMN = 5        # a column definition (``column_index`` says which)
PARAM = 6         # a parameter definition of a prepare answer
META_EOF = 7      # the EOF after definitions (old EOF mode)
ROW = 8
END = 9           # the terminator of a result set (EOF, or OK with DEPRECATE_EOF)
PREPARED = 10     # the prepare OK header
STRING = 11

SERVER_STATUS_CURSOR_EXISTS = 0x0040
_H = struct.Struct("<H")

# Phases inside a response.
_START, _PARAMS, _PARAMS_EOF, _COLUMNS, _COLUMNS_EOF, _ROWS, _DONE = range(7)
ROWS_PHASE = _ROWS     # rows are passing: a relay may skip packets that are plainly rows


class ResponseTracker:
    """Follows one command's answer. After ``start``, ``feed`` each payload in order;
    ``done`` turns true with the last one. ``more`` is set when a result ends with another
    following (SERVER_MORE_RESULTS_EXISTS): the tracker then expects the next one."""

    __slots__ = ("deprecate_eof", "expect", "phase", "columns", "params", "column_index",
                 "done", "more", "status", "statement_id", "cursor")

    def __init__(self, deprecate_eof: bool) -> None:
        self.deprecate_eof = deprecate_eof
        self.expect = 0
        self.phase = _DONE
        self.columns = 0
        self.params = 0
        self.column_index = 0
        self.done = True
        self.more = False
        self.status = 0
        self.statement_id = 0
        self.cursor = False      # COM_STMT_EXECUTE opened a cursor: rows come by FETCH

    def start(self, expect: int, cursor: bool = False) -> None:
        self.expect = expect
        self.phase = _ROWS if expect == EXPECT_FETCH else \
            _COLUMNS if expect == EXPECT_FIELDS else _START
        self.done = False
        self.more = False
        self.columns = 0
        self.column_index = 0
        self.cursor = cursor

    def _terminator(self, payload: bytes) -> bool:
        """An EOF packet, or with DEPRECATE_EOF an OK packet with the 0xFE header."""
        if payload[:1] != b"\xfe":
            return False
        return len(payload) < 9 or (self.deprecate_eof and len(payload) < 0xFFFFFF)

    def _status_of_terminator(self, payload: bytes) -> int:
        if self.deprecate_eof:
            return _ok_status(payload)
        # EOF: header, warnings(2), status(2)
        return int(_H.unpack_from(payload, 3)[0]) if len(payload) >= 5 else 0

    def _finish(self, status: int) -> None:
        self.status = status
        if status & SERVER_MORE_RESULTS_EXISTS and self.expect in (EXPECT_RESULT, EXPECT_FETCH):
            self.more = True
            self.phase = _START
        else:
            self.more = False
            self.phase = _DONE
            self.done = True

    def feed(self, payload: bytes) -> int:
        if self.done:
            raise PacketError("data from the server outside any answer", errno=2027)
        phase = self.phase
        if phase == _ROWS:
            first = payload[:1]
            if first == b"\xff":
                self.phase, self.done, self.more = _DONE, True, False
                return ERR
            if self._terminator(payload):
                self._finish(self._status_of_terminator(payload))
                return END
            return ROW
        if phase == _COLUMNS:
            first = payload[:1]
            if self.expect == EXPECT_FIELDS:
                if first == b"\xff":
                    self.phase, self.done = _DONE, True
                    return ERR
                if self._terminator(payload):
                    self._finish(self._status_of_terminator(payload))
                    return END
                self.column_index += 1
                return COLUMN
            self.column_index += 1
            if self.column_index >= self.columns:
                if self.expect == EXPECT_PREPARE:
                    if self.deprecate_eof:
                        self._finish(0)
                    else:
                        self.phase = _COLUMNS_EOF
                else:
                    self.phase = _COLUMNS_EOF if not self.deprecate_eof else _ROWS
                    if self.deprecate_eof and self.cursor:
                        self.phase = _COLUMNS_EOF   # the cursor's answer ends with an EOF/OK
            return COLUMN
        if phase == _COLUMNS_EOF:
            if not self._terminator(payload):
                raise PacketError("expected EOF after the column definitions", errno=2027)
            status = self._status_of_terminator(payload)
            if self.expect == EXPECT_PREPARE or (self.cursor and
                                                 status & SERVER_STATUS_CURSOR_EXISTS):
                self._finish(status)
                return END if self.expect != EXPECT_PREPARE else META_EOF
            if self.deprecate_eof and self.cursor:
                # no cursor was opened after all: this was the result's terminator
                self._finish(status)
                return END
            self.phase = _ROWS
            return META_EOF
        if phase == _PARAMS:
            self.column_index += 1
            if self.column_index >= self.params:
                self.column_index = 0
                if self.deprecate_eof:
                    self.phase = _COLUMNS if self.columns else _DONE
                    if not self.columns:
                        self._finish(0)
                else:
                    self.phase = _PARAMS_EOF
            return PARAM
        if phase == _PARAMS_EOF:
            if not self._terminator(payload):
                raise PacketError("expected EOF after the parameter definitions", errno=2027)
            if self.columns:
                self.phase = _COLUMNS
            else:
                self._finish(0)
            return META_EOF
        return self._first(payload)

    def skip(self, buf: bytes | bytearray, pos: int, size: int,
             defs: list[bytes] | None = None, rows: bool | None = None) -> tuple[int, int]:
        """Advance over the whole packets from ``pos`` of an answer, as ``feed`` would,
        without making a payload of each: (where it stopped, how many packets it passed).
        It stops at anything ``feed`` should see (a LOCAL INFILE request, a 16 MiB packet, a
        malformed one, a cursor's answer), and when the answer is done.

        With ``defs`` (an answer whose rows are rewritten) the column definitions are
        appended to it, and it also stops before a row, before an ERR, and after the end of
        each result set, so the caller can plan, rewrite and scrub. ``rows=False`` passes
        over the rows of such an answer all the same (its plan rewrites nothing).

        This is the reference: relays call the module's ``skip``, the same walk in C when
        ``_answers.c`` was built."""
        expect = self.expect
        if self.done or self.cursor or expect not in (EXPECT_RESULT, EXPECT_FETCH, EXPECT_OK):
            return pos, 0
        deprecate = self.deprecate_eof
        watch = defs is not None
        stop_at_rows = watch if rows is None else rows
        count = 0
        while size - pos >= 4:
            n = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + n
            if n == 0 or n >= 0xFFFFFF or end > size:
                break
            first = buf[pos + 4]
            phase = self.phase
            ended = False
            if first == 0xFF and watch:
                break
            if phase == _ROWS:
                if first == 0xFF:
                    self.phase, self.done, self.more = _DONE, True, False
                elif first == 0xFE and (n < 9 or deprecate):
                    self._finish(self._status_of_terminator(bytes(buf[pos + 4:end])))
                    ended = True
                elif stop_at_rows:
                    break
            elif phase == _COLUMNS:
                self.column_index += 1
                if defs is not None:
                    defs.append(bytes(buf[pos + 4:end]))
                if self.column_index >= self.columns:
                    self.phase = _ROWS if deprecate else _COLUMNS_EOF
            elif phase == _COLUMNS_EOF:
                if not (first == 0xFE and n < 9):
                    break
                self.phase = _ROWS
            elif phase == _START:
                if first == 0xFF:
                    self.phase, self.done, self.more = _DONE, True, False
                elif first == 0x00:
                    self._finish(_ok_status(bytes(buf[pos + 4:end])))
                    ended = True
                elif expect == EXPECT_RESULT and first < 0xFB:
                    self.columns, self.column_index, self.phase = first, 0, _COLUMNS
                else:
                    break    # a longer column count, LOCAL INFILE, or not an answer: feed
            else:
                break
            pos = end
            count += 1
            if self.done or (ended and watch):
                break
        return pos, count

    def _first(self, payload: bytes) -> int:
        first = payload[:1]
        expect = self.expect
        if first == b"\xff":
            self.phase, self.done, self.more = _DONE, True, False
            return ERR
        if expect == EXPECT_STRING:
            self.phase, self.done = _DONE, True
            return STRING
        if first == b"\x00" or (first == b"\xfe" and expect == EXPECT_OK_OR_EOF):
            if expect == EXPECT_PREPARE:
                if len(payload) < 9:
                    raise PacketError("prepare OK: too short", errno=2027)
                self.statement_id = struct.unpack_from("<I", payload, 1)[0]
                self.columns, self.params = struct.unpack_from("<HH", payload, 5)
                self.column_index = 0
                if self.params:
                    self.phase = _PARAMS
                elif self.columns:
                    self.phase = _COLUMNS
                else:
                    self._finish(0)
                return PREPARED
            self._finish(_ok_status(payload) if first == b"\x00" else
                         self._status_of_terminator(payload))
            return OK
        if expect == EXPECT_RESULT:
            if first == b"\xfb":
                self.phase, self.done = _DONE, True   # the caller answers it
                return INFILE
            count, _ = lenenc_int_at(payload, 0)
            if count is None or count <= 0:
                raise PacketError("result set: invalid column count", errno=2027)
            self.columns = count
            self.column_index = 0
            self.phase = _COLUMNS
            return COLUMN_COUNT
        raise PacketError(f"unexpected answer (first byte {payload[:1].hex() or 'none'})",
                          errno=2027)


def _ok_status(payload: bytes) -> int:
    """Server status of an OK packet (after the affected-rows and insert-id integers)."""
    _, pos = lenenc_int_at(payload, 1)
    _, pos = lenenc_int_at(payload, pos)
    if pos + 2 > len(payload):
        return 0
    status: int = _H.unpack_from(payload, pos)[0]
    return status


try:
    from protocols.mysql._answers import skip as c_skip
except ImportError:   # built without a compiler: the reference walk
    c_skip = None

skip: Callable[[ResponseTracker, bytes | bytearray, int, int, list[bytes] | None, bool],
               tuple[int, int]] = c_skip or ResponseTracker.skip
