"""A minimal blocking PostgreSQL client over a raw socket, built on the sans-IO codec.

Tests use it where a driver would hide what they need to see: exact messages, malformed
bytes, the cancel key, the SQLSTATE of a failed login, or reading a huge result at a chosen
pace without buffering it.
"""

from __future__ import annotations

import socket
import ssl
import struct

from protocols.postgres import messages as m
from protocols.postgres.scram import MECHANISM, ScramClient, ScramError
from tests.conftest import CLIENT_PASSWORD, CLIENT_USER


class RawClient:
    """A frontend on ``peer``: a port on 127.0.0.1, or a socket already connected (for one
    that has been through a GSSENCRequest first). With ``tls`` the connection is upgraded with
    SSLRequest before anything else is sent."""

    def __init__(self, peer: int | socket.socket, user: str = CLIENT_USER,
                 password: str = CLIENT_PASSWORD, database: str = "test", timeout: float = 10.0,
                 *, tls: ssl.SSLContext | None = None) -> None:
        if isinstance(peer, socket.socket):
            sock = peer
        else:
            sock = socket.create_connection(("127.0.0.1", peer), timeout=timeout)
        if tls is not None:
            sock.sendall(m.SSLRequest().encode())
            assert sock.recv(1) == b"S"
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.buf = bytearray()
        self.timeout = timeout
        self.user, self.password, self.database = user, password, database
        self.params: dict[str, str] = {}
        self.key: tuple[int, int] | None = None  # BackendKeyData: process id, secret

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_query(self, sql: str) -> None:
        self.send(m.Query(sql).encode())

    def recv_message(self) -> tuple[bytes, bytes]:
        while len(self.buf) < 5:
            self._fill()
        code, length = struct.unpack("!ci", self.buf[:5])
        while len(self.buf) < length + 1:
            self._fill()
        body = bytes(self.buf[5:length + 1])
        del self.buf[:length + 1]
        return code, body

    def read(self) -> tuple[bytes, object]:
        """The next message, decoded, with its type code."""
        code, body = self.recv_message()
        return code, m.decode_backend(code, body)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by peer")
        self.buf += chunk

    def startup(self) -> list[tuple[bytes, object]]:
        """Run the startup exchange (SCRAM, or none for trust) up to ReadyForQuery or an
        ErrorResponse, or until the server's SCRAM message cannot be answered; return every
        message seen. ParameterStatus and BackendKeyData are kept in ``params`` and ``key``."""
        self.send(m.StartupMessage({"user": self.user, "database": self.database}).encode())
        scram = ScramClient(self.password)
        seen: list[tuple[bytes, object]] = []
        while True:
            code, msg = self.read()
            seen.append((code, msg))
            if isinstance(msg, m.Authentication):
                if msg.kind == m.AUTH_SASL:
                    self.send(m.SASLInitialResponse(MECHANISM, scram.first()).encode())
                elif msg.kind == m.AUTH_SASL_CONTINUE:
                    try:
                        self.send(m.SASLResponse(scram.final(msg.payload)).encode())
                    except ScramError:
                        return seen
                elif msg.kind == m.AUTH_SASL_FINAL:
                    scram.verify(msg.payload)
            elif isinstance(msg, m.ParameterStatus):
                self.params[msg.name] = msg.value
            elif isinstance(msg, m.BackendKeyData):
                self.key = (msg.process_id, msg.secret_key)
            elif code in (b"E", b"Z"):
                return seen

    def login(self) -> dict[str, str]:
        """Log in; return the server's ParameterStatus values."""
        seen = self.startup()
        code, msg = seen[-1]
        if not isinstance(msg, m.ReadyForQuery):
            raise RuntimeError(f"login failed: {getattr(msg, 'fields', msg)}")
        return self.params

    def results(self) -> list[tuple[bytes, object]]:
        """Messages with their type codes, up to and including ReadyForQuery."""
        out: list[tuple[bytes, object]] = []
        while True:
            code, msg = self.read()
            out.append((code, msg))
            if code == b"Z":
                return out

    def until_ready(self) -> list[object]:
        return [msg for _, msg in self.results()]

    def scalar(self, sql: str) -> str:
        """Run a query that returns one value; return it as text."""
        self.send_query(sql)
        rows = [msg for code, msg in self.results() if code == b"D"]
        assert len(rows) == 1 and isinstance(rows[0], m.DataRow), rows
        value = rows[0].values[0]
        assert value is not None
        return bytes(value).decode()

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

    def nothing_arrives_for(self, seconds: float) -> bool:
        """True if the peer sends nothing for ``seconds``; what does arrive is kept."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(self.timeout)
        self.buf.extend(data)
        return False

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    def read_to_close(self) -> bytes:
        """Everything the peer sends (after what is already read) until it closes."""
        out = bytes(self.buf)
        self.buf.clear()
        while chunk := self.sock.recv(65536):
            out += chunk
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
