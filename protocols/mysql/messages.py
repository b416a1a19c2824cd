"""MySQL/MariaDB connection-phase and generic response messages: payloads in, values out, and
back. Framing is packets.py's; nothing here touches a socket or decides anything.

Covers the initial handshake (``HandshakeV10``, with MariaDB's extended capabilities), the
client's ``HandshakeResponse41``, OK, ERR and EOF, length-encoded integers and strings, and the
``mysql_native_password`` scramble.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocols.mysql.packets import PacketError

# Capability flags (lower 32 bits).
CLIENT_LONG_PASSWORD = 1 << 0          # MariaDB: clear means "MariaDB extended caps in use"
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_COMPRESS = 1 << 5
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_INTERACTIVE = 1 << 10
CLIENT_SSL = 1 << 11
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24
CLIENT_QUERY_ATTRIBUTES = 1 << 27
# MariaDB extended capabilities (the upper 32 bits of its 64-bit capability word).
MARIADB_CLIENT_PROGRESS = 1 << 32
MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 34
MARIADB_CLIENT_EXTENDED_METADATA = 1 << 35
MARIADB_CLIENT_CACHE_METADATA = 1 << 36

SERVER_MORE_RESULTS_EXISTS = 0x0008


class Reader:
    """Sequential reads from one payload; every overrun is a PacketError, never an IndexError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise PacketError(f"{self.what}: truncated")

    def uint(self, n: int) -> int:
        self._need(n)
        value = int.from_bytes(self.data[self.pos:self.pos + n], "little")
        self.pos += n
        return value

    def raw(self, n: int) -> bytes:
        self._need(n)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def lenenc_int(self) -> int | None:
        """A length-encoded integer; None for 0xFB (NULL in a text row)."""
        first = self.uint(1)
        if first < 0xFB:
            return first
        if first == 0xFB:
            return None
        if first == 0xFC:
            return self.uint(2)
        if first == 0xFD:
            return self.uint(3)
        if first == 0xFE:
            return self.uint(8)
        raise PacketError(f"{self.what}: invalid length-encoded integer 0xff")

    def lenenc_bytes(self) -> bytes | None:
        n = self.lenenc_int()
        return None if n is None else self.raw(n)

    def cstring(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise PacketError(f"{self.what}: unterminated string")
        out = self.data[self.pos:end]
        self.pos = end + 1
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def lenenc_int_at(data: bytes, pos: int) -> tuple[int | None, int]:
    """The length-encoded integer at ``pos`` and the position after it (None: 0xFB, NULL).
    Raises PacketError past the end, so a truncated packet is never read as a value."""
    if pos >= len(data):
        raise PacketError("length-encoded integer past the end of the packet")
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if width is None or pos + 1 + width > len(data):
        raise PacketError("invalid length-encoded integer")
    return int.from_bytes(data[pos + 1:pos + 1 + width], "little"), pos + 1 + width


def lenenc_int(n: int) -> bytes:
    if n < 0xFB:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lenenc_bytes(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


@dataclass
class HandshakeV10:
    """The server's greeting. ``capabilities`` is the 64-bit word (MariaDB's extended bits
    above 32)."""

    server_version: str
    connection_id: int
    auth_data: bytes                 # the scramble (20 bytes for the usual plugins)
    capabilities: int
    charset: int = 45
    status: int = 2
    auth_plugin: str = "mysql_native_password"

    def encode(self) -> bytes:
        caps = self.capabilities
        mariadb_ext = caps >> 32
        lower = caps & 0xFFFFFFFF
        part1, part2 = self.auth_data[:8], self.auth_data[8:]
        out = bytearray(b"\x0a")
        out += self.server_version.encode() + b"\0"
        out += struct.pack("<I", self.connection_id) + part1 + b"\0"
        out += struct.pack("<HBHH", lower & 0xFFFF, self.charset, self.status, lower >> 16)
        out += bytes([len(self.auth_data) + 1 if lower & CLIENT_PLUGIN_AUTH else 0])
        out += b"\0" * 6 + struct.pack("<I", mariadb_ext)
        if lower & CLIENT_SECURE_CONNECTION:
            out += part2 + b"\0"
        if lower & CLIENT_PLUGIN_AUTH:
            out += self.auth_plugin.encode() + b"\0"
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeV10:
        r = Reader(payload, "initial handshake")
        version = r.uint(1)
        if version != 10:
            raise PacketError(f"initial handshake: protocol version {version}, not 10")
        server_version = r.cstring().decode("utf-8", "replace")
        conn_id = r.uint(4)
        part1 = r.raw(8)
        r.raw(1)
        lower = r.uint(2)
        charset = r.uint(1)
        status = r.uint(2)
        lower |= r.uint(2) << 16
        auth_len = r.uint(1)
        r.raw(6)
        ext = r.uint(4)      # MariaDB's extended capabilities; zero from MySQL
        caps = lower | (ext << 32 if not lower & CLIENT_LONG_PASSWORD else 0)
        part2 = b""
        if lower & CLIENT_SECURE_CONNECTION:
            part2 = r.raw(min(max(13, auth_len - 8), r.left))
            if part2.endswith(b"\0"):
                part2 = part2[:-1]
        plugin = "mysql_native_password"
        if lower & CLIENT_PLUGIN_AUTH and r.left:
            plugin = r.rest().split(b"\0", 1)[0].decode("ascii", "replace")
        return cls(server_version, conn_id, part1 + part2, caps, charset, status, plugin)


@dataclass
class HandshakeResponse41:
    """The client's answer to the greeting: who it is, what it can do, its auth data."""

    capabilities: int
    user: str
    auth_response: bytes = b""
    database: str | None = None
    auth_plugin: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    max_packet: int = 16 * 1024 * 1024
    charset: int = 45

    def encode(self) -> bytes:
        caps = self.capabilities
        lower = caps & 0xFFFFFFFF
        out = bytearray(struct.pack("<IIB", lower, self.max_packet, self.charset))
        out += b"\0" * 19 + struct.pack("<I", caps >> 32)
        out += self.user.encode() + b"\0"
        if lower & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            out += lenenc_bytes(self.auth_response)
        elif lower & CLIENT_SECURE_CONNECTION:
            out += bytes([len(self.auth_response)]) + self.auth_response
        else:
            out += self.auth_response + b"\0"
        if lower & CLIENT_CONNECT_WITH_DB:
            out += (self.database or "").encode() + b"\0"
        if lower & CLIENT_PLUGIN_AUTH:
            out += (self.auth_plugin or "").encode() + b"\0"
        if lower & CLIENT_CONNECT_ATTRS:
            attrs = b"".join(lenenc_bytes(k.encode()) + lenenc_bytes(v.encode())
                             for k, v in self.attributes.items())
            out += lenenc_bytes(attrs)
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeResponse41:
        r = Reader(payload, "handshake response")
        lower = r.uint(4)
        if not lower & CLIENT_PROTOCOL_41:
            raise PacketError("handshake response: the client does not speak protocol 4.1",
                              errno=1043)
        max_packet = r.uint(4)
        charset = r.uint(1)
        r.raw(19)
        ext = r.uint(4)
        caps = lower | (ext << 32 if not lower & CLIENT_LONG_PASSWORD else 0)
        if r.left == 0:   # an SSLRequest: the same header, nothing after it
            return cls(caps, "", max_packet=max_packet, charset=charset)
        user = r.cstring().decode("utf-8", "replace")
        if lower & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = r.lenenc_bytes() or b""
        elif lower & CLIENT_SECURE_CONNECTION:
            auth = r.raw(r.uint(1))
        else:
            auth = r.cstring()
        database = None
        if lower & CLIENT_CONNECT_WITH_DB and r.left:
            database = r.cstring().decode("utf-8", "replace")
        plugin = None
        if lower & CLIENT_PLUGIN_AUTH and r.left:
            plugin = r.cstring().decode("ascii", "replace")
        attrs: dict[str, str] = {}
        if lower & CLIENT_CONNECT_ATTRS and r.left:
            blob = Reader(r.lenenc_bytes() or b"", "connection attributes")
            while blob.left:
                k = blob.lenenc_bytes() or b""
                v = blob.lenenc_bytes() or b""
                attrs[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
        return cls(caps, user, auth, database, plugin, attrs, max_packet, charset)

    @property
    def is_ssl_request(self) -> bool:
        return not self.user and bool(self.capabilities & CLIENT_SSL)


def ssl_request(capabilities: int, max_packet: int = 16 * 1024 * 1024,
                charset: int = 45) -> bytes:
    """The 32-byte SSLRequest a client sends before the TLS handshake."""
    return (struct.pack("<IIB", capabilities & 0xFFFFFFFF, max_packet, charset)
            + b"\0" * 19 + struct.pack("<I", capabilities >> 32))


@dataclass
class OK:
    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = 2
    warnings: int = 0
    info: bytes = b""

    def encode(self, header: int = 0x00) -> bytes:
        return (bytes([header]) + lenenc_int(self.affected_rows) + lenenc_int(self.last_insert_id)
                + struct.pack("<HH", self.status, self.warnings) + self.info)

    @classmethod
    def decode(cls, payload: bytes) -> OK:
        r = Reader(payload, "OK packet")
        if r.uint(1) not in (0x00, 0xFE):
            raise PacketError("OK packet: wrong header")
        affected = r.lenenc_int() or 0
        last_id = r.lenenc_int() or 0
        status = r.uint(2) if r.left >= 2 else 0
        warnings = r.uint(2) if r.left >= 2 else 0
        return cls(affected, last_id, status, warnings, r.rest())


@dataclass
class ERR:
    errno: int
    message: str
    sqlstate: str = "HY000"

    def encode(self) -> bytes:
        return (b"\xff" + struct.pack("<H", self.errno) + b"#" + self.sqlstate.encode()[:5]
                + self.message.encode())

    @classmethod
    def decode(cls, payload: bytes) -> ERR:
        r = Reader(payload, "ERR packet")
        if r.uint(1) != 0xFF:
            raise PacketError("ERR packet: wrong header")
        errno = r.uint(2)
        sqlstate = "HY000"
        if r.left and r.data[r.pos:r.pos + 1] == b"#":
            r.raw(1)
            sqlstate = r.raw(5).decode("ascii", "replace")
        return cls(errno, r.rest().decode("utf-8", "replace"), sqlstate)


def is_eof(payload: bytes) -> bool:
    """An EOF packet (0xFE with less than 9 bytes), as opposed to a row or an OK with 0xFE."""
    return payload[:1] == b"\xfe" and len(payload) < 9


def native_password(password: bytes, scramble: bytes) -> bytes:
    """mysql_native_password: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)));
    empty for an empty password."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mix = hashlib.sha1(scramble[:20] + stage2).digest()
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


# -- commands and text result sets ---------------------------------------------------------------

COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_STATISTICS = 0x09
COM_PING = 0x0E
COM_CHANGE_USER = 0x11
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_RESET_CONNECTION = 0x1F


@dataclass(frozen=True)
class ColumnDefinition:
    """Protocol::ColumnDefinition41: where a result column comes from (``org_table`` and
    ``org_name`` name the stored column, when there is one) and its type."""

    schema: str
    table: str
    org_table: str
    name: str
    org_name: str
    charset: int
    length: int
    type: int
    flags: int
    decimals: int
    catalog: str = "def"

    def encode(self) -> bytes:
        out = bytearray()
        for text in (self.catalog, self.schema, self.table, self.org_table, self.name,
                     self.org_name):
            out += lenenc_bytes(text.encode())
        out += b"\x0c" + struct.pack("<HIBHB", self.charset, self.length, self.type,
                                     self.flags, self.decimals) + b"\0\0"
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> ColumnDefinition:
        r = Reader(payload, "column definition")
        texts = []
        for _ in range(6):
            value = r.lenenc_bytes()
            texts.append((value or b"").decode("utf-8", "replace"))
        fixed = r.lenenc_int()
        if fixed is None or fixed < 0x0C:
            raise PacketError("column definition: bad fixed-length fields")
        charset, length, type_, flags, decimals = struct.unpack("<HIBHB", r.raw(10))
        catalog, schema, table, org_table, name, org_name = texts
        return cls(schema, table, org_table, name, org_name, charset, length, type_, flags,
                   decimals, catalog)


def text_row(payload: bytes, columns: int) -> tuple[bytes | None, ...]:
    """One row of a text result set: ``columns`` length-encoded values, NULL as 0xFB."""
    r = Reader(payload, "text row")
    values = tuple(r.lenenc_bytes() for _ in range(columns))
    if r.left:
        raise PacketError("text row: bytes after the last value")
    return values


def encode_text_row(values: tuple[bytes | None, ...]) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_bytes(v) for v in values)


CellRewrite = Callable[[bytes | None], bytes | None]


def rewrite_text_row(payload: bytes, rewrites: Sequence[tuple[int, CellRewrite]]) -> bytes:
    """The row with the cells at the given (ascending) positions passed through their
    rewrite; cells in between are copied as they are, undecoded."""
    out = bytearray()
    pos = 0
    col = 0
    copied = 0
    n = len(payload)
    for index, fn in rewrites:
        while col < index:      # skip to the cell
            if pos >= n:
                raise PacketError("text row: fewer values than columns")
            length, pos = lenenc_int_at(payload, pos)
            if length is not None:
                pos += length
            col += 1
        start = pos
        length, pos = lenenc_int_at(payload, pos)
        if length is None:
            value = None
        else:
            if pos + length > n:
                raise PacketError("text row: value past the end of the packet")
            value = bytes(payload[pos:pos + length])
            pos += length
        col += 1
        out += payload[copied:start]
        new = fn(value)
        out += b"\xfb" if new is None else lenenc_bytes(new)
        copied = pos
    if pos > n:
        raise PacketError("text row: value past the end of the packet")
    out += payload[copied:]
    return bytes(out)


def query(sql: str) -> bytes:
    """A COM_QUERY payload (without query attributes, which Wiregate does not offer)."""
    return bytes([COM_QUERY]) + sql.encode()
