"""MySQL packet framing: arbitrary chunks in, whole payloads out, and back.

Every MySQL message travels in packets of ``<3-byte little-endian length><sequence id>`` and up
to 16 MiB - 1 of payload; a longer payload is split into full packets followed by a shorter one
(possibly empty), all with consecutive sequence ids. ``PacketReader`` reassembles them and
checks the sequence; ``encode`` splits. The sequence restarts at 0 with every command, which
the caller says with ``reset``. Sans-IO: no sockets, no policy.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PACKET = 0xFFFFFF     # payload bytes in one packet; a full packet means "more follows"
HEADER = 4


class PacketError(Exception):
    """Bytes that are not valid MySQL framing (ER_NET_PACKETS_OUT_OF_ORDER, too large, ...).
    ``errno`` is the error number a server would use."""

    def __init__(self, message: str, errno: int = 1156) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class Packet:
    """One reassembled payload and the sequence id of its first packet."""

    seq: int
    payload: bytes


class PacketReader:
    """Reassembles payloads from a byte stream.

    ``max_payload`` bounds a reassembled payload (the server's ``max_allowed_packet``): a
    larger one is refused as soon as its size is known, before it is buffered. ``expect``
    is the next sequence id; ``None`` accepts any first id (a side that joins mid-exchange).
    """

    def __init__(self, max_payload: int = 64 * 1024 * 1024, expect: int | None = 0) -> None:
        self.max_payload = max_payload
        self.expect = expect
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._first_seq = 0
        self._size = 0

    def reset(self, seq: int = 0) -> None:
        """A new command: the next packet must carry ``seq``."""
        self.expect = seq

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        out: list[Packet] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            if self.expect is not None and seq != self.expect:
                raise PacketError(f"packet out of order: sequence {seq}, expected "
                                  f"{self.expect}")
            if self._size + length > self.max_payload:
                raise PacketError(f"packet of more than {self.max_payload} bytes "
                                  "(max_allowed_packet)", errno=1153)
            if len(buf) - pos < HEADER + length:
                break
            if not self._parts and self._size == 0:
                self._first_seq = seq
            self._parts.append(bytes(buf[pos + HEADER:pos + HEADER + length]))
            self._size += length
            pos += HEADER + length
            self.expect = (seq + 1) & 0xFF
            if length < MAX_PACKET:
                payload = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                out.append(Packet(self._first_seq, payload))
                self._parts = []
                self._size = 0
        del buf[:pos]
        return out

    @property
    def idle(self) -> bool:
        """Nothing half-read: a safe point to hand the stream to someone else (TLS)."""
        return not self._buf and not self._parts


def encode(payload: bytes, seq: int) -> bytes:
    """``payload`` as packets from sequence id ``seq`` on (split at 16 MiB - 1, with an empty
    last packet when the size is an exact multiple)."""
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos:pos + MAX_PACKET]
        out += len(chunk).to_bytes(3, "little") + bytes([seq & 0xFF]) + chunk
        seq += 1
        pos += len(chunk)
        if len(chunk) < MAX_PACKET:
            return bytes(out)


def next_seq(payload: bytes, seq: int) -> int:
    """The sequence id after ``payload`` is sent from ``seq``."""
    return (seq + len(payload) // MAX_PACKET + 1) & 0xFF
