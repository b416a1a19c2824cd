"""Framing state machines: arbitrary chunks of bytes in, whole messages out.

``StartupFramer`` handles the untyped startup-phase packets of a client. ``Framer`` handles the
typed ``<code><int32 length><body>`` stream in either direction. It is built for a proxy's hot
path: the caller names the message types it must see (``watch``) and gets back only those, as
offsets into its own chunk; everything between them is the caller's bytes, to forward
untouched, never copied or decoded. A message that is not watched may be forwarded before its
end has arrived; a watched one is held back until it is whole, so nothing is forwarded before
the caller has decided on it.
"""

from __future__ import annotations

import struct

from protocols.postgres.messages import MAX_STARTUP_PACKET, ProtocolViolation
from protocols.postgres.rows import row_run_end

_LEN = struct.Struct("!i")
_unpack_len = _LEN.unpack_from

RELEASED = -1  # Frame.code of header bytes held back from an earlier chunk, then not watched


class Frame:
    """A whole watched message.

    When ``start >= 0`` the message is ``buf[start:end]`` of the chunk just scanned. When it
    began in an earlier chunk, ``start`` is -1, ``buf`` holds the whole message and ``end`` is
    where it finishes in the current chunk (so ``buf`` stands for ``chunk[:end]``).
    A DataRow frame may hold several DataRows in a row (``Framer.row_runs``).
    """

    __slots__ = ("code", "start", "end", "buf")

    def __init__(self, code: int, start: int, end: int, buf: bytes) -> None:
        self.code = code
        self.start = start
        self.end = end
        self.buf = buf

    @property
    def raw(self) -> bytes:
        return self.buf if self.start < 0 else self.buf[self.start:self.end]

    @property
    def body(self) -> bytes:
        return self.raw[5:]

    def __repr__(self) -> str:
        name = "released" if self.code == RELEASED else repr(chr(self.code))
        return f"Frame({name}, start={self.start}, end={self.end})"


class StartupFramer:
    """Collects one startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest, Cancel).

    The length is checked before the body is buffered, like the server does: at most
    10,000 bytes, at least 8.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes | None:
        """Return a whole packet once one is complete; the caller then switches framers."""
        self._buf += data
        if len(self._buf) < 4:
            return None
        length = self.packet_length(self._buf[:4])
        if len(self._buf) < length:
            return None
        packet = bytes(self._buf[:length])
        del self._buf[:length]
        return packet

    @staticmethod
    def packet_length(header: bytes | bytearray) -> int:
        """Length of the packet a 4-byte header announces, refused outside 8..10,000."""
        length: int = _unpack_len(header, 0)[0]
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolViolation(f"invalid length of startup packet: {length}")
        return length

    def leftover(self) -> bytes:
        """Bytes after the packet (a client pipelining into TLS or its first message)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out


VALID_FRONTEND = b"QPBDECSHXdcfFp"
VALID_BACKEND = b"RSKZETDCIsn123tGHWdcAVNv"


class Framer:
    """Typed-message framer for one direction of a session.

    ``watch`` is a 256-entry table: ``watch[code]`` true means the caller wants that message
    whole. ``scan(chunk)`` returns the watched messages completed by this chunk, in order.
    The bytes of the chunk the caller may forward are ``chunk[:forwardable]``; the rest is
    the start of a watched message (or a header) held back until the next chunk completes it.
    """

    def __init__(self, valid: bytes, max_message_size: int, direction: str) -> None:
        self.watch = bytearray(256)
        self._valid = bytearray(256)
        for c in valid:
            self._valid[c] = 1
        self.max_message_size = max_message_size
        self.direction = direction
        self._skip = 0                  # bytes still to pass of an unwatched message
        self._held = bytearray()        # partial header, or a partial watched message
        self._held_need = 0             # total size of the held watched message, 0 = header only
        self.forwardable = 0
        # False when the output is exactly the chunk, in order: nothing held back, nothing
        # released from an earlier chunk. Then the caller may forward the chunk object whole.
        self.spanned = False
        # When DataRows are watched, one Frame stands for all the whole DataRows that follow
        # one another (a run): a result's rows cost one frame per chunk, not one per row.
        self.row_runs = False

    def reset(self) -> None:
        """Forget a partly scanned tail: the caller scans those bytes again (from a message
        boundary) after changing what is watched."""
        self._skip = 0
        self._held = bytearray()
        self._held_need = 0
        self.forwardable = 0
        self.spanned = False

    def set_watch(self, codes: bytes, on: bool = True) -> None:
        for c in codes:
            self.watch[c] = 1 if on else 0

    def _check(self, code: int, length: int) -> None:
        if not self._valid[code]:
            raise ProtocolViolation(
                f"invalid {self.direction} message type {chr(code)!r} (0x{code:02x})")
        if length < 4:
            raise ProtocolViolation(f"invalid {self.direction} message length {length}")
        if length > self.max_message_size:
            raise ProtocolViolation(
                f"{self.direction} message of {length} bytes exceeds the limit of "
                f"{self.max_message_size} bytes")

    def scan(self, data: bytes) -> list[Frame]:
        n = len(data)
        pos = 0
        frames: list[Frame] = []
        self.spanned = bool(self._held)
        # 1. Finish what the previous chunk left open: a held header or watched message...
        if self._held:
            held = self._held
            if len(held) < 5:
                take = min(5 - len(held), n)
                held += data[:take]
                pos = take
                if len(held) < 5:
                    self.forwardable = 0
                    return frames
                code = held[0]
                length = _unpack_len(held, 1)[0]
                self._check(code, length)
                if self.watch[code]:
                    self._held_need = length + 1
                else:
                    self._held = bytearray()
                    frames.append(Frame(RELEASED, -1, pos, bytes(held)))
                    self._skip = length - 4
            if self._held:
                take = min(self._held_need - len(held), n - pos)
                held += data[pos:pos + take]
                pos += take
                if len(held) < self._held_need:
                    self.forwardable = 0
                    return frames
                self._held = bytearray()
                self._held_need = 0
                frames.append(Frame(held[0], -1, pos, bytes(held)))
        # ...or the rest of an unwatched message, forwarded as it comes.
        if self._skip:
            take = min(self._skip, n - pos)
            self._skip -= take
            pos += take
            if self._skip:
                self.forwardable = n
                return frames
        # 2. Whole messages inside this chunk.
        watch = self.watch
        valid = self._valid
        limit = self.max_message_size
        while pos + 5 <= n:
            code = data[pos]
            length = _unpack_len(data, pos + 1)[0]
            if not valid[code] or length < 4 or length > limit:
                self._check(code, length)
            end = pos + 1 + length
            if watch[code]:
                if end > n:
                    break
                if code == 0x44 and self.row_runs:
                    end = row_run_end(data, end, limit)
                frames.append(Frame(code, pos, end, data))
            elif end > n:
                self._skip = end - n
                pos = n
                break
            pos = end
        if pos < n:
            # A partial header, or the start of a watched message: hold it back.
            self.spanned = True
            self._held = bytearray(data[pos:])
            self._held_need = _unpack_len(data, pos + 1)[0] + 1 if n - pos >= 5 else 0
        self.forwardable = pos
        return frames

    @property
    def idle(self) -> bool:
        """True when no message is half-way through (safe point to switch protocol phase)."""
        return not self._skip and not self._held
