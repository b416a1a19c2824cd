"""A minimal blocking PostgreSQL client over a raw socket, built on the sans-IO codec.

Tests use it where a driver would hide what they need to see: exact messages, malformed
bytes, or reading a huge result at a chosen pace without buffering it.
"""

from __future__ import annotations

import socket
import struct

from protocols.postgres import messages as m
from protocols.postgres.scram import ScramClient


class RawClient:
    def __init__(self, port: int, user: str = "demo", password: str = "demo",
                 database: str = "test", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.user, self.password, self.database = user, password, database

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_message(self) -> tuple[bytes, bytes]:
        while len(self.buf) < 5:
            self._fill()
        code, length = struct.unpack("!ci", self.buf[:5])
        while len(self.buf) < length + 1:
            self._fill()
        body = self.buf[5:length + 1]
        self.buf = self.buf[length + 1:]
        return code, body

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by peer")
        self.buf += chunk

    def login(self) -> dict[str, str]:
        self.send(m.StartupMessage({"user": self.user, "database": self.database}).encode())
        scram = ScramClient(self.password)
        params: dict[str, str] = {}
        while True:
            code, body = self.recv_message()
            msg = m.decode_backend(code, body)
            if isinstance(msg, m.Authentication):
                if msg.kind == m.AUTH_SASL:
                    self.send(m.SASLInitialResponse("SCRAM-SHA-256", scram.first()).encode())
                elif msg.kind == m.AUTH_SASL_CONTINUE:
                    self.send(m.SASLResponse(scram.final(msg.payload)).encode())
                elif msg.kind == m.AUTH_SASL_FINAL:
                    scram.verify(msg.payload)
            elif isinstance(msg, m.ParameterStatus):
                params[msg.name] = msg.value
            elif isinstance(msg, m.ErrorResponse):
                raise RuntimeError(f"login failed: {msg.fields}")
            elif isinstance(msg, m.ReadyForQuery):
                return params

    def until_ready(self) -> list[object]:
        out: list[object] = []
        while True:
            code, body = self.recv_message()
            msg = m.decode_backend(code, body)
            out.append(msg)
            if isinstance(msg, m.ReadyForQuery):
                return out

    def error(self) -> m.ErrorResponse | None:
        """Read until an ErrorResponse or the connection closes; return the error if any."""
        try:
            while True:
                code, body = self.recv_message()
                if code == b"E":
                    msg = m.decode_backend(code, body)
                    assert isinstance(msg, m.ErrorResponse)
                    return msg
        except (ConnectionError, OSError):
            return None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
