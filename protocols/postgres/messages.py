"""PostgreSQL protocol 3.0 messages: typed values, encoders and decoders.

Every frontend and backend message of protocol 3.0 (and 3.2's NegotiateProtocolVersion) has a
class here with ``encode() -> bytes``; ``decode_frontend`` / ``decode_backend`` turn a framed body
back into one. The proxy's hot path does not go through these classes: it frames with
``framing.py`` and only decodes the few messages it must understand.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PROTOCOL_3_0 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
MAX_STARTUP_PACKET = 10000  # the server's own limit

_I = struct.Struct("!i")
_H = struct.Struct("!h")
_HDR = struct.Struct("!ci")


class ProtocolViolation(Exception):
    """Bytes that are not valid protocol; carries the SQLSTATE the server would use (08P01)."""

    sqlstate = "08P01"


def frame(type_code: bytes, body: bytes) -> bytes:
    return _HDR.pack(type_code, len(body) + 4) + body


def cstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    if b"\0" in b:
        raise ProtocolViolation("string contains a NUL byte")
    return b + b"\0"


class Reader:
    """Cursor over a message body; every read is bounds-checked and raises ProtocolViolation."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes | memoryview, what: str = "message") -> None:
        self.buf = bytes(buf)
        self.pos = 0
        self.what = what

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise ProtocolViolation(f"{self.what}: truncated")

    def int32(self) -> int:
        self._need(4)
        v: int = _I.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def uint32(self) -> int:
        return self.int32() & 0xFFFFFFFF

    def int16(self) -> int:
        self._need(2)
        v: int = _H.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return v

    def byte(self) -> int:
        self._need(1)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def raw(self, n: int) -> bytes:
        self._need(n)
        v = self.buf[self.pos:self.pos + n]
        self.pos += n
        return v

    def cstring(self) -> str:
        end = self.buf.find(b"\0", self.pos)
        if end < 0:
            raise ProtocolViolation(f"{self.what}: unterminated string")
        v = self.buf[self.pos:end]
        self.pos = end + 1
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return v.decode("latin-1")

    def rest(self) -> bytes:
        v = self.buf[self.pos:]
        self.pos = len(self.buf)
        return v

    def count(self, what: str) -> int:
        n = self.int16()
        if n < 0:
            raise ProtocolViolation(f"{self.what}: negative {what} count")
        return n

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolViolation(f"{self.what}: {len(self.buf) - self.pos} unexpected bytes")


# --------------------------------------------------------------------------------------------
# Startup phase (untyped packets: length + code)


@dataclass(frozen=True)
class StartupMessage:
    params: dict[str, str]
    version: int = PROTOCOL_3_0

    def encode(self) -> bytes:
        body = _I.pack(self.version)
        body += b"".join(cstr(k) + cstr(v) for k, v in self.params.items()) + b"\0"
        return _I.pack(len(body) + 4) + body


@dataclass(frozen=True)
class SSLRequest:
    def encode(self) -> bytes:
        return _I.pack(8) + _I.pack(SSL_REQUEST_CODE)


@dataclass(frozen=True)
class GSSENCRequest:
    def encode(self) -> bytes:
        return _I.pack(8) + _I.pack(GSSENC_REQUEST_CODE)


@dataclass(frozen=True)
class CancelRequest:
    process_id: int
    secret_key: int

    def encode(self) -> bytes:
        return struct.pack("!iiII", 16, CANCEL_REQUEST_CODE, self.process_id & 0xFFFFFFFF,
                           self.secret_key & 0xFFFFFFFF)


StartupPacket = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def decode_startup(packet: bytes) -> StartupPacket:
    """Decode a whole startup-phase packet (length prefix included)."""
    r = Reader(packet, "startup packet")
    length = r.int32()
    if length != len(packet):
        raise ProtocolViolation("startup packet: length mismatch")
    code = r.int32()
    if code == SSL_REQUEST_CODE:
        r.end()
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE:
        r.end()
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid, key = r.uint32(), r.uint32()
        r.end()
        return CancelRequest(pid, key)
    if code >> 16 != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
            "server supports 3.0 to 3.0")
    params: dict[str, str] = {}
    while True:
        name = r.cstring()
        if name == "":
            break
        params[name] = r.cstring()
    r.end()
    return StartupMessage(params, code)


# --------------------------------------------------------------------------------------------
# Frontend (client → server) messages


@dataclass(frozen=True)
class Query:
    sql: str
    code = b"Q"

    def encode(self) -> bytes:
        return frame(b"Q", cstr(self.sql))


@dataclass(frozen=True)
class Parse:
    name: str
    sql: str
    param_types: tuple[int, ...] = ()
    code = b"P"

    def encode(self) -> bytes:
        body = cstr(self.name) + cstr(self.sql) + _H.pack(len(self.param_types))
        body += b"".join(struct.pack("!I", t & 0xFFFFFFFF) for t in self.param_types)
        return frame(b"P", body)


@dataclass(frozen=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()
    code = b"B"

    def encode(self) -> bytes:
        out = [cstr(self.portal), cstr(self.statement), _H.pack(len(self.param_formats))]
        out += [_H.pack(f) for f in self.param_formats]
        out.append(_H.pack(len(self.params)))
        for p in self.params:
            out.append(_I.pack(-1) if p is None else _I.pack(len(p)) + p)
        out.append(_H.pack(len(self.result_formats)))
        out += [_H.pack(f) for f in self.result_formats]
        return frame(b"B", b"".join(out))


@dataclass(frozen=True)
class Describe:
    kind: str  # 'S' statement or 'P' portal
    name: str
    code = b"D"

    def encode(self) -> bytes:
        return frame(b"D", self.kind.encode() + cstr(self.name))


@dataclass(frozen=True)
class Execute:
    portal: str
    max_rows: int = 0
    code = b"E"

    def encode(self) -> bytes:
        return frame(b"E", cstr(self.portal) + _I.pack(self.max_rows))


@dataclass(frozen=True)
class Close:
    kind: str
    name: str
    code = b"C"

    def encode(self) -> bytes:
        return frame(b"C", self.kind.encode() + cstr(self.name))


@dataclass(frozen=True)
class Sync:
    code = b"S"

    def encode(self) -> bytes:
        return frame(b"S", b"")


@dataclass(frozen=True)
class Flush:
    code = b"H"

    def encode(self) -> bytes:
        return frame(b"H", b"")


@dataclass(frozen=True)
class Terminate:
    code = b"X"

    def encode(self) -> bytes:
        return frame(b"X", b"")


@dataclass(frozen=True)
class CopyData:
    data: bytes
    code = b"d"

    def encode(self) -> bytes:
        return frame(b"d", self.data)


@dataclass(frozen=True)
class CopyDone:
    code = b"c"

    def encode(self) -> bytes:
        return frame(b"c", b"")


@dataclass(frozen=True)
class CopyFail:
    message: str
    code = b"f"

    def encode(self) -> bytes:
        return frame(b"f", cstr(self.message))


@dataclass(frozen=True)
class FunctionCall:
    function_oid: int
    arg_formats: tuple[int, ...]
    args: tuple[bytes | None, ...]
    result_format: int
    code = b"F"

    def encode(self) -> bytes:
        out = [struct.pack("!I", self.function_oid & 0xFFFFFFFF), _H.pack(len(self.arg_formats))]
        out += [_H.pack(f) for f in self.arg_formats]
        out.append(_H.pack(len(self.args)))
        for a in self.args:
            out.append(_I.pack(-1) if a is None else _I.pack(len(a)) + a)
        out.append(_H.pack(self.result_format))
        return frame(b"F", b"".join(out))


@dataclass(frozen=True)
class PasswordMessage:
    """'p' carries a cleartext/MD5 password; its body is opaque until auth says which."""

    data: bytes
    code = b"p"

    def encode(self) -> bytes:
        return frame(b"p", self.data)

    @property
    def password(self) -> str:
        return Reader(self.data, "PasswordMessage").cstring()


@dataclass(frozen=True)
class SASLInitialResponse:
    mechanism: str
    data: bytes | None

    def encode(self) -> bytes:
        d = _I.pack(-1) if self.data is None else _I.pack(len(self.data)) + self.data
        return frame(b"p", cstr(self.mechanism) + d)

    @classmethod
    def decode(cls, body: bytes) -> SASLInitialResponse:
        r = Reader(body, "SASLInitialResponse")
        mech = r.cstring()
        n = r.int32()
        data = None if n == -1 else r.raw(n)
        r.end()
        return cls(mech, data)


@dataclass(frozen=True)
class SASLResponse:
    data: bytes

    def encode(self) -> bytes:
        return frame(b"p", self.data)


def _params(r: Reader) -> tuple[bytes | None, ...]:
    out: list[bytes | None] = []
    for _ in range(r.count("parameter")):
        n = r.int32()
        if n < -1:
            raise ProtocolViolation(f"{r.what}: invalid parameter length {n}")
        out.append(None if n == -1 else r.raw(n))
    return tuple(out)


def decode_frontend(code: bytes, body: bytes) -> object:
    """Decode a framed frontend message body by its type byte."""
    r = Reader(body, f"frontend message {code!r}")
    msg: object
    if code == b"Q":
        msg = Query(r.cstring())
    elif code == b"P":
        name, sql = r.cstring(), r.cstring()
        msg = Parse(name, sql, tuple(r.uint32() for _ in range(r.count("parameter type"))))
    elif code == b"B":
        portal, stmt = r.cstring(), r.cstring()
        pf = tuple(r.int16() for _ in range(r.count("format")))
        params = _params(r)
        rf = tuple(r.int16() for _ in range(r.count("result format")))
        msg = Bind(portal, stmt, pf, params, rf)
    elif code in (b"D", b"C"):
        kind = chr(r.byte())
        if kind not in "SP":
            raise ProtocolViolation(f"invalid {'Describe' if code == b'D' else 'Close'} kind")
        name = r.cstring()
        msg = Describe(kind, name) if code == b"D" else Close(kind, name)
    elif code == b"E":
        msg = Execute(r.cstring(), r.int32())
    elif code == b"S":
        msg = Sync()
    elif code == b"H":
        msg = Flush()
    elif code == b"X":
        msg = Terminate()
    elif code == b"d":
        return CopyData(r.rest())
    elif code == b"c":
        msg = CopyDone()
    elif code == b"f":
        msg = CopyFail(r.cstring())
    elif code == b"F":
        oid = r.uint32()
        fmts = tuple(r.int16() for _ in range(r.count("format")))
        args = _params(r)
        msg = FunctionCall(oid, fmts, args, r.int16())
    elif code == b"p":
        return PasswordMessage(r.rest())
    else:
        raise ProtocolViolation(f"invalid frontend message type {code!r}")
    r.end()
    return msg


# --------------------------------------------------------------------------------------------
# Backend (server → client) messages

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True)
class Authentication:
    """Any 'R' message: kind is the auth code, payload what follows it."""

    kind: int
    payload: bytes = b""

    def encode(self) -> bytes:
        return frame(b"R", _I.pack(self.kind) + self.payload)

    @property
    def mechanisms(self) -> list[str]:
        return [m.decode("utf-8", "replace") for m in self.payload.split(b"\0") if m]


def auth_ok() -> bytes:
    return Authentication(AUTH_OK).encode()


def auth_sasl(mechanisms: list[str]) -> bytes:
    return Authentication(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\0").encode()


@dataclass(frozen=True)
class ParameterStatus:
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(b"S", cstr(self.name) + cstr(self.value))


@dataclass(frozen=True)
class BackendKeyData:
    process_id: int
    secret_key: int

    def encode(self) -> bytes:
        return frame(b"K", struct.pack("!II", self.process_id & 0xFFFFFFFF,
                                       self.secret_key & 0xFFFFFFFF))


@dataclass(frozen=True)
class ReadyForQuery:
    status: str  # 'I' idle, 'T' in transaction, 'E' failed transaction

    def encode(self) -> bytes:
        return frame(b"Z", self.status.encode())


@dataclass(frozen=True)
class NegotiateProtocolVersion:
    newest_minor: int
    unsupported: tuple[str, ...]

    def encode(self) -> bytes:
        body = _I.pack(self.newest_minor) + _I.pack(len(self.unsupported))
        return frame(b"v", body + b"".join(cstr(o) for o in self.unsupported))


# ErrorResponse / NoticeResponse field codes
FIELD_NAMES = {
    "S": "severity", "V": "severity_nonlocalized", "C": "sqlstate", "M": "message",
    "D": "detail", "H": "hint", "P": "position", "p": "internal_position",
    "q": "internal_query", "W": "where", "s": "schema", "t": "table", "c": "column",
    "d": "data_type", "n": "constraint", "F": "file", "L": "line", "R": "routine",
}


@dataclass(frozen=True)
class ErrorResponse:
    fields: dict[str, str]
    code = b"E"

    def encode(self) -> bytes:
        body = b"".join(k.encode() + cstr(v) for k, v in self.fields.items()) + b"\0"
        return frame(self.code, body)

    @property
    def sqlstate(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")


@dataclass(frozen=True)
class NoticeResponse(ErrorResponse):
    code = b"N"


def error(sqlstate: str, message: str, severity: str = "ERROR", detail: str | None = None,
          hint: str | None = None) -> bytes:
    """Encode an ErrorResponse the way the server writes them (S, V, C, M, D, H)."""
    fields = {"S": severity, "V": severity, "C": sqlstate, "M": message}
    if detail:
        fields["D"] = detail
    if hint:
        fields["H"] = hint
    return ErrorResponse(fields).encode()


def _fields(r: Reader) -> dict[str, str]:
    out: dict[str, str] = {}
    while True:
        c = r.byte()
        if c == 0:
            return out
        out[chr(c)] = r.cstring()


@dataclass(frozen=True)
class Field:
    name: str
    table_oid: int
    column: int
    type_oid: int
    type_size: int
    type_modifier: int
    format: int


@dataclass(frozen=True)
class RowDescription:
    fields: tuple[Field, ...]

    def encode(self) -> bytes:
        out = [_H.pack(len(self.fields))]
        for f in self.fields:
            out.append(cstr(f.name) + struct.pack("!IhIhih", f.table_oid & 0xFFFFFFFF, f.column,
                                                  f.type_oid & 0xFFFFFFFF, f.type_size,
                                                  f.type_modifier, f.format))
        return frame(b"T", b"".join(out))


@dataclass(frozen=True)
class DataRow:
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        out = [_H.pack(len(self.values))]
        for v in self.values:
            out.append(_I.pack(-1) if v is None else _I.pack(len(v)) + v)
        return frame(b"D", b"".join(out))


def decode_data_row(body: bytes | memoryview) -> tuple[bytes | None, ...]:
    r = Reader(body, "DataRow")
    vals = _params(r)
    r.end()
    return vals


@dataclass(frozen=True)
class CommandComplete:
    tag: str

    def encode(self) -> bytes:
        return frame(b"C", cstr(self.tag))


@dataclass(frozen=True)
class CopyResponse:
    """CopyInResponse 'G', CopyOutResponse 'H' or CopyBothResponse 'W'."""

    code: bytes
    overall_format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        body = bytes([self.overall_format]) + _H.pack(len(self.column_formats))
        return frame(self.code, body + b"".join(_H.pack(f) for f in self.column_formats))


@dataclass(frozen=True)
class NotificationResponse:
    process_id: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return frame(b"A", struct.pack("!I", self.process_id & 0xFFFFFFFF) + cstr(self.channel)
                     + cstr(self.payload))


@dataclass(frozen=True)
class FunctionCallResponse:
    value: bytes | None

    def encode(self) -> bytes:
        v = _I.pack(-1) if self.value is None else _I.pack(len(self.value)) + self.value
        return frame(b"V", v)


@dataclass(frozen=True)
class ParameterDescription:
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        return frame(b"t", _H.pack(len(self.type_oids))
                     + b"".join(struct.pack("!I", t) for t in self.type_oids))


@dataclass(frozen=True)
class Simple:
    """A backend message with no body: ParseComplete '1', BindComplete '2', CloseComplete '3',
    NoData 'n', EmptyQueryResponse 'I', PortalSuspended 's', CopyDone 'c'."""

    code: bytes
    name: str = field(default="", compare=False)

    def encode(self) -> bytes:
        return frame(self.code, b"")


_SIMPLE_BACKEND = {b"1": "ParseComplete", b"2": "BindComplete", b"3": "CloseComplete",
                   b"n": "NoData", b"I": "EmptyQueryResponse", b"s": "PortalSuspended",
                   b"c": "CopyDone"}


def decode_backend(code: bytes, body: bytes) -> object:
    """Decode a framed backend message body by its type byte."""
    r = Reader(body, f"backend message {code!r}")
    msg: object
    if code == b"R":
        kind = r.int32()
        return Authentication(kind, r.rest())
    if code == b"S":
        msg = ParameterStatus(r.cstring(), r.cstring())
    elif code == b"K":
        msg = BackendKeyData(r.uint32(), r.uint32())
    elif code == b"Z":
        status = chr(r.byte())
        if status not in "ITE":
            raise ProtocolViolation(f"invalid transaction status {status!r}")
        msg = ReadyForQuery(status)
    elif code in (b"E", b"N"):
        f = _fields(r)
        msg = ErrorResponse(f) if code == b"E" else NoticeResponse(f)
    elif code == b"T":
        fields = []
        for _ in range(r.count("field")):
            name = r.cstring()
            fields.append(Field(name, r.uint32(), r.int16(), r.uint32(), r.int16(), r.int32(),
                                r.int16()))
        msg = RowDescription(tuple(fields))
    elif code == b"D":
        return DataRow(decode_data_row(body))
    elif code == b"C":
        msg = CommandComplete(r.cstring())
    elif code in (b"G", b"H", b"W"):
        overall = r.byte()
        msg = CopyResponse(code, overall, tuple(r.int16() for _ in range(r.count("format"))))
    elif code == b"d":
        return CopyData(r.rest())
    elif code == b"A":
        msg = NotificationResponse(r.uint32(), r.cstring(), r.cstring())
    elif code == b"V":
        n = r.int32()
        msg = FunctionCallResponse(None if n == -1 else r.raw(n))
    elif code == b"t":
        msg = ParameterDescription(tuple(r.uint32() for _ in range(r.count("type"))))
    elif code == b"v":
        minor = r.int32()
        n = r.int32()
        if n < 0:
            raise ProtocolViolation("NegotiateProtocolVersion: negative option count")
        msg = NegotiateProtocolVersion(minor, tuple(r.cstring() for _ in range(n)))
    elif code in _SIMPLE_BACKEND:
        msg = Simple(code, _SIMPLE_BACKEND[code])
    else:
        raise ProtocolViolation(f"invalid backend message type {code!r}")
    r.end()
    return msg
