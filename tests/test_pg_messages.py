"""PostgreSQL message codec: every message type round-trips, and malformed bytes only ever raise
``ProtocolViolation`` (never IndexError, struct.error or UnicodeDecodeError)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.postgres import messages as m
from protocols.postgres.framing import VALID_BACKEND, VALID_FRONTEND
from protocols.postgres.messages import ProtocolViolation

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------

text = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]),
               max_size=24)
nonempty_text = text.filter(bool)
blob = st.binary(max_size=40)
nullable = st.none() | blob
int16 = st.integers(-(2**15), 2**15 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
uint32 = st.integers(0, 2**32 - 1)
SMALL = 6  # list lengths in generated messages

frontend_messages = st.one_of(
    st.builds(m.Query, text),
    st.builds(m.Parse, text, text, st.lists(uint32, max_size=SMALL).map(tuple)),
    st.builds(m.Bind, text, text, st.lists(int16, max_size=SMALL).map(tuple),
              st.lists(nullable, max_size=SMALL).map(tuple),
              st.lists(int16, max_size=SMALL).map(tuple)),
    st.builds(m.Describe, st.sampled_from("SP"), text),
    st.builds(m.Close, st.sampled_from("SP"), text),
    st.builds(m.Execute, text, int32),
    st.just(m.Sync()), st.just(m.Flush()), st.just(m.Terminate()),
    st.builds(m.CopyData, blob), st.just(m.CopyDone()), st.builds(m.CopyFail, text),
    st.builds(m.FunctionCall, uint32, st.lists(int16, max_size=SMALL).map(tuple),
              st.lists(nullable, max_size=SMALL).map(tuple), int16),
    st.builds(m.PasswordMessage, blob),
)

field_codes = st.characters(min_codepoint=1, max_codepoint=127)
row_field = st.builds(m.Field, text, uint32, int16, uint32, int16, int32, int16)

backend_messages = st.one_of(
    st.builds(m.Authentication, int32, blob),
    st.builds(m.ParameterStatus, text, text),
    st.builds(m.BackendKeyData, uint32, uint32),
    st.builds(m.ReadyForQuery, st.sampled_from("ITE")),
    st.builds(m.ErrorResponse, st.dictionaries(field_codes, text, max_size=6)),
    st.builds(m.NoticeResponse, st.dictionaries(field_codes, text, max_size=6)),
    st.builds(m.RowDescription, st.lists(row_field, max_size=4).map(tuple)),
    st.builds(m.DataRow, st.lists(nullable, max_size=SMALL).map(tuple)),
    st.builds(m.CommandComplete, text),
    st.builds(m.CopyResponse, st.sampled_from([b"G", b"H", b"W"]), st.integers(0, 255),
              st.lists(int16, max_size=SMALL).map(tuple)),
    st.builds(m.CopyData, blob),
    st.builds(m.NotificationResponse, uint32, text, text),
    st.builds(m.FunctionCallResponse, nullable),
    st.builds(m.ParameterDescription, st.lists(uint32, max_size=SMALL).map(tuple)),
    st.builds(m.NegotiateProtocolVersion, int32, st.lists(text, max_size=4).map(tuple)),
    st.builds(m.Simple, st.sampled_from([b"1", b"2", b"3", b"n", b"I", b"s", b"c"])),
)

# Messages whose decoder takes "the rest of the body": no prefix or suffix can be detected.
OPAQUE_FRONTEND = {b"d", b"p"}
OPAQUE_BACKEND = {b"R", b"d"}


def split(raw: bytes) -> tuple[bytes, bytes]:
    """Check the header of an encoded message and return (type byte, body)."""
    assert len(raw) >= 5
    (length,) = struct.unpack("!i", raw[1:5])
    assert length == len(raw) - 1
    return raw[:1], raw[5:]


def front(raw: bytes) -> object:
    code, body = split(raw)
    return m.decode_frontend(code, body)


def back(raw: bytes) -> object:
    code, body = split(raw)
    return m.decode_backend(code, body)


# -- startup packets ----------------------------------------------------------------------------


@SETTINGS
@given(st.dictionaries(nonempty_text, text, max_size=6))
def test_startup_message_round_trip(params: dict[str, str]) -> None:
    msg = m.StartupMessage(params)
    raw = msg.encode()
    assert struct.unpack("!ii", raw[:8]) == (len(raw), m.PROTOCOL_3_0)
    assert raw.endswith(b"\0")
    got = m.decode_startup(raw)
    assert got == msg
    assert isinstance(got, m.StartupMessage)
    assert list(got.params) == list(params)  # order preserved


def test_startup_message_known_bytes() -> None:
    raw = m.StartupMessage({"user": "alice", "database": "db"}).encode()
    assert raw == (b"\x00\x00\x00\x20\x00\x03\x00\x00user\0alice\0database\0db\0\0")


@pytest.mark.parametrize("minor", [0, 1, 2, 0xFFFF])
def test_startup_protocol_3_any_minor_accepted(minor: int) -> None:
    version = (3 << 16) | minor
    got = m.decode_startup(m.StartupMessage({"user": "u"}, version).encode())
    assert got == m.StartupMessage({"user": "u"}, version)


@pytest.mark.parametrize("major, minor", [(2, 0), (1, 0), (4, 0), (0, 0), (2, 5)])
def test_startup_other_protocol_refused_naming_version(major: int, minor: int) -> None:
    raw = m.StartupMessage({"user": "u"}, (major << 16) | minor).encode()
    with pytest.raises(ProtocolViolation, match=rf"unsupported frontend protocol {major}\.{minor}"):
        m.decode_startup(raw)


def test_startup_protocol_2_message_mentions_supported_range() -> None:
    with pytest.raises(ProtocolViolation) as exc:
        m.decode_startup(m.StartupMessage({}, 2 << 16).encode())
    assert "2.0" in str(exc.value) and "3.0" in str(exc.value)
    assert exc.value.sqlstate == "08P01"


@pytest.mark.parametrize("msg", [m.SSLRequest(), m.GSSENCRequest()])
def test_ssl_and_gssenc_requests(msg: object) -> None:
    raw = msg.encode()  # type: ignore[attr-defined]
    assert len(raw) == 8
    assert m.decode_startup(raw) == msg
    # the same code with a trailing body is not that request any more
    with pytest.raises(ProtocolViolation):
        m.decode_startup(struct.pack("!i", 12) + raw[4:] + b"\0\0\0\0")


def test_request_codes_are_the_servers() -> None:
    assert m.SSLRequest().encode() == struct.pack("!ihh", 8, 1234, 5679)
    assert m.GSSENCRequest().encode() == struct.pack("!ihh", 8, 1234, 5680)
    assert m.CancelRequest(1, 2).encode() == struct.pack("!ihhii", 16, 1234, 5678, 1, 2)


@SETTINGS
@given(uint32, uint32)
def test_cancel_request_round_trip(pid: int, key: int) -> None:
    msg = m.CancelRequest(pid, key)
    raw = msg.encode()
    assert len(raw) == 16
    assert m.decode_startup(raw) == msg


def test_cancel_request_wrong_size_refused() -> None:
    raw = m.CancelRequest(7, 9).encode()
    with pytest.raises(ProtocolViolation):
        m.decode_startup(struct.pack("!i", 12) + raw[4:12])
    with pytest.raises(ProtocolViolation):
        m.decode_startup(struct.pack("!i", 20) + raw[4:] + b"\0\0\0\0")


@pytest.mark.parametrize("raw", [
    b"",
    b"\x00\x00",
    b"\x00\x00\x00\x08",                                   # length only
    b"\x00\x00\x00\x09\x00\x03\x00\x00",                   # claims 9 bytes, has 8
    b"\x00\x00\x00\x07\x00\x03\x00\x00",                   # claims 7 bytes, has 8
    b"\x00\x00\x00\x0d\x00\x03\x00\x00user\0",             # key without value, no terminator
    b"\x00\x00\x00\x10\x00\x03\x00\x00user\0bob",          # unterminated value
    b"\x00\x00\x00\x11\x00\x03\x00\x00user\0bob\0",        # missing final NUL
    b"\x00\x00\x00\x14\x00\x03\x00\x00user\0bob\0\0xy",    # bytes after the final NUL
])
def test_startup_malformed_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        m.decode_startup(raw)


def test_nul_in_string_refused_on_encode() -> None:
    with pytest.raises(ProtocolViolation, match="NUL"):
        m.Query("select 1\0; drop table x").encode()
    with pytest.raises(ProtocolViolation, match="NUL"):
        m.StartupMessage({"user": "a\0b"}).encode()


# -- frontend messages --------------------------------------------------------------------------


@SETTINGS
@given(frontend_messages)
def test_frontend_round_trip(msg: object) -> None:
    raw = msg.encode()  # type: ignore[attr-defined]
    assert raw[:1] == msg.code  # type: ignore[attr-defined]
    assert front(raw) == msg


@pytest.mark.parametrize("msg, expected", [
    (m.Query("select 1"), b"Q\x00\x00\x00\x0dselect 1\0"),
    (m.Sync(), b"S\x00\x00\x00\x04"),
    (m.Flush(), b"H\x00\x00\x00\x04"),
    (m.Terminate(), b"X\x00\x00\x00\x04"),
    (m.CopyDone(), b"c\x00\x00\x00\x04"),
    (m.Execute("", 0), b"E\x00\x00\x00\x09\0\x00\x00\x00\x00"),
    (m.Describe("S", "s1"), b"D\x00\x00\x00\x08Ss1\0"),
    (m.Close("P", ""), b"C\x00\x00\x00\x06P\0"),
    (m.Parse("", "select $1", (23,)),
     b"P\x00\x00\x00\x15\0select $1\0\x00\x01\x00\x00\x00\x17"),
    (m.Bind("", "s", (1,), (b"ab", None), (0,)),
     b"B\x00\x00\x00\x1b\0s\0\x00\x01\x00\x01\x00\x02\x00\x00\x00\x02ab\xff\xff\xff\xff"
     b"\x00\x01\x00\x00"),
])
def test_frontend_known_bytes(msg: object, expected: bytes) -> None:
    assert msg.encode() == expected  # type: ignore[attr-defined]
    assert front(expected) == msg


def test_parse_with_large_type_oids() -> None:
    # OIDs are unsigned: the decoder yields values >= 2**31, and they must encode back.
    msg = m.Parse("s", "select $1, $2", (2**31, 2**32 - 1))
    raw = msg.encode()
    assert raw.endswith(b"\x80\x00\x00\x00\xff\xff\xff\xff")
    assert front(raw) == msg


def test_function_call_with_large_oid() -> None:
    msg = m.FunctionCall(2**32 - 1, (1,), (b"x", None), 1)
    assert front(msg.encode()) == msg


def test_bind_null_and_empty_params_differ() -> None:
    got = front(m.Bind("p", "s", (0, 1), (None, b"", b"\0\xff"), (1,)).encode())
    assert isinstance(got, m.Bind)
    assert got.params == (None, b"", b"\0\xff")
    assert got.param_formats == (0, 1)
    assert got.result_formats == (1,)


@pytest.mark.parametrize("code", [b"D", b"C"])
@pytest.mark.parametrize("kind", [b"X", b"s", b"p", b"\0", b"\xff"])
def test_describe_close_invalid_kind_refused(code: bytes, kind: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="kind"):
        m.decode_frontend(code, kind + b"name\0")


def test_describe_and_close_decode_to_their_own_classes() -> None:
    assert m.decode_frontend(b"D", b"Pportal\0") == m.Describe("P", "portal")
    assert m.decode_frontend(b"C", b"Sstmt\0") == m.Close("S", "stmt")
    assert m.Describe("S", "x") != m.Close("S", "x")


def test_password_message_cleartext() -> None:
    raw = m.PasswordMessage(m.cstr("hunter2")).encode()
    got = front(raw)
    assert isinstance(got, m.PasswordMessage)
    assert got.password == "hunter2"
    with pytest.raises(ProtocolViolation):
        _ = m.PasswordMessage(b"no terminator").password


@SETTINGS
@given(text, nullable)
def test_sasl_initial_response_round_trip(mechanism: str, data: bytes | None) -> None:
    msg = m.SASLInitialResponse(mechanism, data)
    code, body = split(msg.encode())
    assert code == b"p"
    assert m.SASLInitialResponse.decode(body) == msg


def test_sasl_initial_response_minus_one_length_is_none() -> None:
    raw = m.SASLInitialResponse("SCRAM-SHA-256", None).encode()
    assert raw.endswith(b"SCRAM-SHA-256\0\xff\xff\xff\xff")
    assert m.SASLInitialResponse.decode(raw[5:]).data is None
    # an empty response is not the same as no response
    assert m.SASLInitialResponse.decode(
        m.SASLInitialResponse("SCRAM-SHA-256", b"").encode()[5:]).data == b""


@pytest.mark.parametrize("body", [
    b"SCRAM-SHA-256\0\xff\xff\xff\xfe",        # length -2
    b"SCRAM-SHA-256\0\x80\x00\x00\x00",        # length -2**31
    b"SCRAM-SHA-256\0\x00\x00\x00\x05abc",     # truncated data
    b"SCRAM-SHA-256\0\x00\x00\x00\x01abc",     # trailing bytes
    b"SCRAM-SHA-256\0\x00\x00",                # truncated length
    b"SCRAM-SHA-256",                          # unterminated mechanism
    b"",
])
def test_sasl_initial_response_malformed(body: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        m.SASLInitialResponse.decode(body)


@SETTINGS
@given(blob)
def test_sasl_response_round_trip(data: bytes) -> None:
    got = front(m.SASLResponse(data).encode())
    assert got == m.PasswordMessage(data)


# -- backend messages ---------------------------------------------------------------------------


@SETTINGS
@given(backend_messages)
def test_backend_round_trip(msg: object) -> None:
    assert back(msg.encode()) == msg  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind, payload", [
    (m.AUTH_OK, b""),
    (m.AUTH_CLEARTEXT, b""),
    (m.AUTH_MD5, b"\x01\x02\x03\x04"),
    (m.AUTH_SASL_CONTINUE, b"r=abc,s=c2FsdA==,i=4096"),
    (m.AUTH_SASL_FINAL, b"v=c2lnbmF0dXJl"),
])
def test_authentication_kinds(kind: int, payload: bytes) -> None:
    raw = m.Authentication(kind, payload).encode()
    assert raw[:1] == b"R"
    assert struct.unpack("!i", raw[5:9]) == (kind,)
    got = back(raw)
    assert got == m.Authentication(kind, payload)


def test_auth_ok_bytes() -> None:
    assert m.auth_ok() == b"R\x00\x00\x00\x08\x00\x00\x00\x00"


def test_auth_sasl_mechanisms_list() -> None:
    raw = m.auth_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
    assert raw == (b"R\x00\x00\x00\x2a\x00\x00\x00\x0a"
                   b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0")
    got = back(raw)
    assert isinstance(got, m.Authentication)
    assert got.kind == m.AUTH_SASL
    assert got.mechanisms == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]


@SETTINGS
@given(blob)
def test_auth_mechanisms_never_raise_on_garbage(payload: bytes) -> None:
    mechs = m.Authentication(m.AUTH_SASL, payload).mechanisms
    assert all(isinstance(x, str) and x for x in mechs)


def test_ready_for_query_statuses() -> None:
    for status in "ITE":
        assert back(m.ReadyForQuery(status).encode()) == m.ReadyForQuery(status)


@pytest.mark.parametrize("status", [b"X", b"i", b"\0", b"\xff"])
def test_ready_for_query_invalid_status_refused(status: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="transaction status"):
        m.decode_backend(b"Z", status)


def test_ready_for_query_empty_or_long_refused() -> None:
    with pytest.raises(ProtocolViolation):
        m.decode_backend(b"Z", b"")
    with pytest.raises(ProtocolViolation):
        m.decode_backend(b"Z", b"II")


def test_error_response_fields() -> None:
    raw = m.error("42501", "permission denied", detail="because", hint="ask")
    got = back(raw)
    assert isinstance(got, m.ErrorResponse) and not isinstance(got, m.NoticeResponse)
    assert got.fields == {"S": "ERROR", "V": "ERROR", "C": "42501", "M": "permission denied",
                          "D": "because", "H": "ask"}
    assert list(got.fields) == ["S", "V", "C", "M", "D", "H"]
    assert got.sqlstate == "42501"
    assert got.message == "permission denied"
    assert raw.endswith(b"Hask\0\0")


def test_error_without_detail_or_hint() -> None:
    got = back(m.error("08P01", "bad", severity="FATAL"))
    assert isinstance(got, m.ErrorResponse)
    assert got.fields == {"S": "FATAL", "V": "FATAL", "C": "08P01", "M": "bad"}


def test_notice_response_is_distinct_from_error() -> None:
    fields = {"S": "NOTICE", "C": "00000", "M": "hello"}
    raw = m.NoticeResponse(fields).encode()
    assert raw[:1] == b"N"
    got = back(raw)
    assert isinstance(got, m.NoticeResponse)
    assert got == m.NoticeResponse(fields)
    assert got != m.ErrorResponse(fields)
    assert m.ErrorResponse({}).sqlstate == "" and m.ErrorResponse({}).message == ""


def test_row_description_fields() -> None:
    f1 = m.Field("id", 16384, 1, 23, 4, -1, 0)
    f2 = m.Field("name", 16384, 2, 25, -1, -1, 1)
    raw = m.RowDescription((f1, f2)).encode()
    assert raw[5:7] == b"\x00\x02"
    assert back(raw) == m.RowDescription((f1, f2))


def test_data_row_with_nulls() -> None:
    values = (b"1", None, b"", None, b"\0\xff")
    raw = m.DataRow(values).encode()
    assert raw == (b"D\x00\x00\x00\x1d\x00\x05\x00\x00\x00\x01" + b"1"
                   + b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff"
                   + b"\x00\x00\x00\x02\0\xff")
    assert back(raw) == m.DataRow(values)
    assert m.decode_data_row(raw[5:]) == values
    assert m.decode_data_row(memoryview(raw)[5:]) == values


def test_command_complete_and_copy_responses() -> None:
    assert back(m.CommandComplete("INSERT 0 5").encode()) == m.CommandComplete("INSERT 0 5")
    for code in (b"G", b"H", b"W"):
        msg = m.CopyResponse(code, 1, (1, 1, 0))
        assert back(msg.encode()) == msg


def test_notification_and_function_call_response() -> None:
    msg = m.NotificationResponse(2**32 - 1, "chan", "payload")
    assert back(msg.encode()) == msg
    for value in (None, b"", b"\x00\x01"):
        assert back(m.FunctionCallResponse(value).encode()) == m.FunctionCallResponse(value)


def test_parameter_description_and_negotiate() -> None:
    assert back(m.ParameterDescription((23, 2**32 - 1)).encode()) == \
        m.ParameterDescription((23, 2**32 - 1))
    msg = m.NegotiateProtocolVersion(0, ("_pq_.foo", "_pq_.bar"))
    assert back(msg.encode()) == msg


@pytest.mark.parametrize("code, name", [
    (b"1", "ParseComplete"), (b"2", "BindComplete"), (b"3", "CloseComplete"),
    (b"n", "NoData"), (b"I", "EmptyQueryResponse"), (b"s", "PortalSuspended"),
    (b"c", "CopyDone"),
])
def test_bodiless_backend_messages(code: bytes, name: str) -> None:
    raw = m.Simple(code).encode()
    assert raw == code + b"\x00\x00\x00\x04"
    got = m.decode_backend(code, b"")
    assert isinstance(got, m.Simple)
    assert got.code == code and got.name == name
    with pytest.raises(ProtocolViolation, match="unexpected bytes"):
        m.decode_backend(code, b"\0")


@pytest.mark.parametrize("code", [b"Q", b"S", b"H", b"X", b"c"])
def test_frontend_bodiless_with_body_refused(code: bytes) -> None:
    body = b"" if code == b"Q" else b"x"
    with pytest.raises(ProtocolViolation):
        m.decode_frontend(code, body)


def test_invalid_type_bytes_refused() -> None:
    for c in range(256):
        code = bytes([c])
        if c not in VALID_FRONTEND:
            with pytest.raises(ProtocolViolation, match="invalid frontend message type"):
                m.decode_frontend(code, b"")
        if c not in VALID_BACKEND:
            with pytest.raises(ProtocolViolation, match="invalid backend message type"):
                m.decode_backend(code, b"")


# -- malformed bodies ---------------------------------------------------------------------------


def _truncated_or_extended_refused(msg: object, data: st.DataObject,
                                   decode: Callable[[bytes, bytes], object],
                                   opaque: set[bytes]) -> None:
    code, body = split(msg.encode())  # type: ignore[attr-defined]
    if code in opaque:
        return
    if body:
        cut = data.draw(st.integers(0, len(body) - 1), label="cut")
        with pytest.raises(ProtocolViolation):
            decode(code, body[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=8), label="extra")
    with pytest.raises(ProtocolViolation):
        decode(code, body + extra)


@SETTINGS
@given(frontend_messages, st.data())
def test_frontend_truncated_or_extended_refused(msg: object, data: st.DataObject) -> None:
    _truncated_or_extended_refused(msg, data, m.decode_frontend, OPAQUE_FRONTEND)


@SETTINGS
@given(backend_messages, st.data())
def test_backend_truncated_or_extended_refused(msg: object, data: st.DataObject) -> None:
    _truncated_or_extended_refused(msg, data, m.decode_backend, OPAQUE_BACKEND)


NEG = b"\xff\xff"        # int16 -1
NEG2 = b"\xff\xfe"       # int16 -2
LEN_M2 = b"\xff\xff\xff\xfe"  # int32 -2


@pytest.mark.parametrize("code, body, what", [
    (b"P", b"\0select 1\0" + NEG, "negative parameter type count"),
    (b"B", b"\0\0" + NEG, "negative format count"),
    (b"B", b"\0\0\x00\x00" + NEG2, "negative parameter count"),
    (b"B", b"\0\0\x00\x00\x00\x00" + NEG, "negative result format count"),
    (b"B", b"\0\0\x00\x00\x00\x01" + LEN_M2 + b"\x00\x00", "invalid parameter length -2"),
    (b"B", b"\0\0\x00\x00\x00\x01\x80\x00\x00\x00\x00\x00", "invalid parameter length"),
    (b"F", b"\x00\x00\x00\x01" + NEG, "negative format count"),
    (b"F", b"\x00\x00\x00\x01\x00\x00" + NEG, "negative parameter count"),
    (b"F", b"\x00\x00\x00\x01\x00\x00\x00\x01" + LEN_M2 + b"\x00\x00",
     "invalid parameter length -2"),
])
def test_frontend_negative_counts_and_lengths(code: bytes, body: bytes, what: str) -> None:
    with pytest.raises(ProtocolViolation, match=what):
        m.decode_frontend(code, body)


@pytest.mark.parametrize("code, body, what", [
    (b"T", NEG, "negative field count"),
    (b"D", NEG, "negative parameter count"),
    (b"D", b"\x00\x01" + LEN_M2, "invalid parameter length -2"),
    (b"G", b"\x00" + NEG, "negative format count"),
    (b"H", b"\x01" + NEG, "negative format count"),
    (b"W", b"\x01" + NEG, "negative format count"),
    (b"t", NEG, "negative type count"),
    (b"v", b"\x00\x00\x00\x00\xff\xff\xff\xff", "negative option count"),
    (b"V", LEN_M2, "truncated"),
    (b"V", b"\x80\x00\x00\x00", "truncated"),
])
def test_backend_negative_counts_and_lengths(code: bytes, body: bytes, what: str) -> None:
    with pytest.raises(ProtocolViolation, match=what):
        m.decode_backend(code, body)


def test_data_row_count_larger_than_body_refused() -> None:
    with pytest.raises(ProtocolViolation, match="truncated"):
        m.decode_data_row(b"\x7f\xff\x00\x00\x00\x00")


def test_invalid_utf8_does_not_escape_as_unicode_error() -> None:
    got = m.decode_frontend(b"Q", b"select '\xff\xfe'\0")
    assert isinstance(got, m.Query)
    assert got.sql.startswith("select '")


ALL_CODES = st.integers(0, 255).map(lambda c: bytes([c]))
GARBAGE_SETTINGS = settings(max_examples=400, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])


def _only_protocol_violation(fn, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except ProtocolViolation:
        pass


@GARBAGE_SETTINGS
@given(st.one_of(st.sampled_from([bytes([c]) for c in VALID_FRONTEND]), ALL_CODES),
       st.binary(max_size=64))
def test_frontend_garbage_only_protocol_violation(code: bytes, body: bytes) -> None:
    _only_protocol_violation(m.decode_frontend, code, body)


@GARBAGE_SETTINGS
@given(st.one_of(st.sampled_from([bytes([c]) for c in VALID_BACKEND]), ALL_CODES),
       st.binary(max_size=64))
def test_backend_garbage_only_protocol_violation(code: bytes, body: bytes) -> None:
    _only_protocol_violation(m.decode_backend, code, body)


@GARBAGE_SETTINGS
@given(st.binary(max_size=64))
def test_other_decoders_garbage_only_protocol_violation(body: bytes) -> None:
    _only_protocol_violation(m.decode_startup, body)
    _only_protocol_violation(m.decode_startup, struct.pack("!i", len(body) + 4) + body)
    _only_protocol_violation(m.SASLInitialResponse.decode, body)
    _only_protocol_violation(m.decode_data_row, body)
    _only_protocol_violation(lambda: m.PasswordMessage(body).password)


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    """Damage a valid body: overwrite, insert or delete a few bytes."""
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        op = data.draw(st.sampled_from(["set", "insert", "delete"]), label="op")
        i = data.draw(st.integers(0, len(buf)), label="at")
        if op == "set" and i < len(buf):
            buf[i] = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]), label="byte")
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=4), label="ins")
        elif i < len(buf):
            del buf[i]
    return bytes(buf)


@GARBAGE_SETTINGS
@given(st.one_of(frontend_messages.map(lambda x: (m.decode_frontend, x)),
                 backend_messages.map(lambda x: (m.decode_backend, x))), st.data())
def test_mutated_messages_only_protocol_violation(case: tuple, data: st.DataObject) -> None:
    decoder, msg = case
    code, body = split(msg.encode())
    _only_protocol_violation(decoder, code, _mutate(body, data))


@GARBAGE_SETTINGS
@given(st.dictionaries(nonempty_text, text, max_size=4), st.data())
def test_mutated_startup_only_protocol_violation(params: dict[str, str],
                                                 data: st.DataObject) -> None:
    raw = m.StartupMessage(params).encode()
    damaged = _mutate(raw[4:], data)
    _only_protocol_violation(m.decode_startup, struct.pack("!i", len(damaged) + 4) + damaged)
    _only_protocol_violation(m.decode_startup, _mutate(raw, data))
