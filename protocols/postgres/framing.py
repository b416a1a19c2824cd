"""Framing state machines: arbitrary chunks of bytes in, whole messages (or pass-through spans) out.

``StartupFramer`` handles the untyped startup-phase packets of a client. ``Framer`` handles the
typed ``<code><int32 length><body>`` stream in either direction. It is built for a proxy's hot
path: the caller names the message types it must see (``watch``), and everything else is handed
back as spans of the caller's own buffer, never copied or decoded. A message that is not
watched may be forwarded before its end has arrived; a watched one is held until it is whole,
so nothing is forwarded before the caller has decided on it. The watch set may change between
two messages (the caller iterates lazily), which is how a result rewrite is switched on for one
statement's rows only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from protocols.postgres.messages import MAX_STARTUP_PACKET, ProtocolViolation

_LEN = struct.Struct("!i")
_unpack_len = _LEN.unpack_from


class Frame:
    """A whole watched message: ``code`` is the type byte as an int, ``body`` excludes the
    header, ``raw`` is the complete message as it arrived (header included)."""

    __slots__ = ("code", "raw")

    def __init__(self, code: int, raw: bytes | memoryview) -> None:
        self.code = code
        self.raw = raw

    @property
    def body(self) -> bytes:
        return bytes(self.raw[5:])

    def __repr__(self) -> str:
        return f"Frame({chr(self.code)!r}, {len(self.raw) - 5} bytes)"


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
        length = _unpack_len(self._buf, 0)[0]
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolViolation(f"invalid length of startup packet: {length}")
        if len(self._buf) < length:
            return None
        packet = bytes(self._buf[:length])
        del self._buf[:length]
        return packet

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
    whole. ``feed(data)`` yields, in stream order, ``memoryview`` spans of ``data`` to forward
    verbatim and ``Frame`` objects for watched messages.
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
        # True after a feed() whose output is not exactly its input in order (bytes held back
        # or released from an earlier chunk): the caller cannot forward the chunk object whole.
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

    def feed(self, data: bytes) -> Iterator[memoryview | Frame]:
        n = len(data)
        view = memoryview(data)
        pos = 0
        self.spanned = bool(self._held)
        # 1. Finish what the previous chunk left open: a held header or watched message...
        if self._held:
            held = self._held
            if len(held) < 5:
                take = min(5 - len(held), n)
                held += view[:take]
                pos = take
                if len(held) < 5:
                    return
                code = held[0]
                length = _unpack_len(held, 1)[0]
                self._check(code, length)
                if self.watch[code]:
                    self._held_need = length + 1
                else:
                    self._held = bytearray()
                    yield memoryview(bytes(held))
                    self._skip = length - 4
            if self._held:
                take = min(self._held_need - len(held), n - pos)
                held += view[pos:pos + take]
                pos += take
                if len(held) < self._held_need:
                    return
                self._held = bytearray()
                self._held_need = 0
                yield Frame(held[0], bytes(held))
        # ...or the rest of an unwatched message, forwarded as it comes.
        start = pos
        if self._skip:
            take = min(self._skip, n - pos)
            self._skip -= take
            pos += take
            if self._skip:
                yield view[start:] if start else view
                return
        # 2. Whole messages inside this chunk; ``watch`` is re-read after every yield.
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
                if pos > start:
                    yield view[start:pos]
                yield Frame(code, view[pos:end])
                start = end
            elif end > n:
                self._skip = end - n
                pos = n
                break
            pos = end
        if pos < n:
            # A partial header, or the start of a watched message: hold it back.
            self.spanned = True
            if pos > start:
                yield view[start:pos]
            self._held = bytearray(view[pos:])
            self._held_need = _unpack_len(data, pos + 1)[0] + 1 if n - pos >= 5 else 0
            return
        if pos > start:
            yield view if start == 0 else view[start:pos]

    @property
    def idle(self) -> bool:
        """True when no message is half-way through (safe point to switch protocol phase)."""
        return not self._skip and not self._held
