"""Masked MySQL cells still decode as their column's type: text-protocol cells through
PyMySQL's own converters, binary-protocol cells through struct, for every type."""

from __future__ import annotations

import datetime
import decimal
import json
import struct

import pytest
from pymysql import converters

from policies.masking import STRATEGIES, WITHHELD, MaskTransform, Strategy
from policies.mysql_masking import (
    WITHHELD_VALUE,
    DetectText,
    MessageColumn,
    MySQLColumn,
    binary_cell_rewrite,
    cell_rewrite,
    plan,
    scrub_mysql_error,
    scrub_mysql_message,
    text_cell_rewrite,
)
from protocols.mysql import types as t

KEY = b"k" * 32
ALL = [Strategy(name, key=KEY, keep_last=4) for name in STRATEGIES]
MASKING = [s for s in ALL if s.name != "null"]


def col(type_: int, flags: int = 0, charset: int = 45, decimals: int = 0,
        length: int = 0) -> MySQLColumn:
    return MySQLColumn(0, "test", "customers", "customers", "c", "c", type_, flags, charset,
                       decimals, length)


def decode_text(c: MySQLColumn, value: bytes) -> object:
    """What PyMySQL hands the application for a text-protocol cell."""
    strings = {t.VARCHAR, t.VAR_STRING, t.STRING, t.TINY_BLOB, t.MEDIUM_BLOB, t.LONG_BLOB,
               t.BLOB}
    if (c.charset == t.BINARY_CHARSET and c.type in strings) or c.type in (t.BIT, t.GEOMETRY):
        return value
    text = value.decode("utf-8")
    if c.type == t.JSON:
        return json.loads(text)
    convert = converters.decoders.get(c.type)
    return convert(text) if convert is not None else text


INTEGERS = [
    (t.TINY, 0, -128, 127, b"-100"), (t.TINY, t.UNSIGNED_FLAG, 0, 255, b"250"),
    (t.SHORT, 0, -(1 << 15), (1 << 15) - 1, b"-30000"),
    (t.SHORT, t.UNSIGNED_FLAG, 0, (1 << 16) - 1, b"65000"),
    (t.INT24, 0, -(1 << 23), (1 << 23) - 1, b"8000000"),
    (t.INT24, t.UNSIGNED_FLAG, 0, (1 << 24) - 1, b"16000000"),
    (t.LONG, 0, -(1 << 31), (1 << 31) - 1, b"-2147483648"),
    (t.LONG, t.UNSIGNED_FLAG, 0, (1 << 32) - 1, b"4294967295"),
    (t.LONGLONG, 0, -(1 << 63), (1 << 63) - 1, b"9223372036854775807"),
    (t.LONGLONG, t.UNSIGNED_FLAG, 0, (1 << 64) - 1, b"18446744073709551615"),
]
BINARY_INT = {t.TINY: (1, "b"), t.SHORT: (2, "h"), t.INT24: (4, "i"), t.LONG: (4, "i"),
              t.LONGLONG: (8, "q"), t.YEAR: (2, "H")}


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
@pytest.mark.parametrize("type_,flags,lo,hi,original", INTEGERS)
def test_integers_stay_in_range(strategy: Strategy, type_: int, flags: int, lo: int,
                                hi: int, original: bytes) -> None:
    c = col(type_, flags, charset=63)
    value = decode_text(c, text_cell_rewrite(strategy, c)(original) or b"")
    assert isinstance(value, int) and lo <= value <= hi
    width, fmt = BINARY_INT[type_]
    fmt = "<" + (fmt.upper() if flags else fmt)
    raw = struct.pack(fmt, int(original))
    out = binary_cell_rewrite(strategy, c)(raw)
    assert out is not None and len(out) == width
    n = struct.unpack(fmt, out)[0]
    assert lo <= n <= hi and (type_ != t.INT24 or n < (1 << 24))


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
def test_year(strategy: Strategy) -> None:
    c = col(t.YEAR, t.UNSIGNED_FLAG, charset=63)
    value = decode_text(c, text_cell_rewrite(strategy, c)(b"1999") or b"")
    assert isinstance(value, int) and 1901 <= value <= 2155
    out = binary_cell_rewrite(strategy, c)(struct.pack("<H", 1999))
    assert out is not None and 1901 <= struct.unpack("<H", out)[0] <= 2155


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
@pytest.mark.parametrize("type_,fmt", [(t.FLOAT, "<f"), (t.DOUBLE, "<d")])
def test_floats(strategy: Strategy, type_: int, fmt: str) -> None:
    c = col(type_, charset=63)
    value = decode_text(c, text_cell_rewrite(strategy, c)(b"3.25") or b"")
    assert isinstance(value, float)
    out = binary_cell_rewrite(strategy, c)(struct.pack(fmt, 3.25))
    assert out is not None and len(out) == struct.calcsize(fmt)
    assert struct.unpack(fmt, out)[0] != 3.25 or strategy.name == "partial"


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
@pytest.mark.parametrize("length,decimals,flags", [(12, 2, 0), (11, 2, t.UNSIGNED_FLAG),
                                                   (4, 2, 0), (3, 0, 0), (66, 30, 0)])
def test_decimals_keep_precision_and_scale(strategy: Strategy, length: int, decimals: int,
                                           flags: int) -> None:
    c = col(t.NEWDECIMAL, flags, charset=63, decimals=decimals, length=length)
    for rewrite in (text_cell_rewrite(strategy, c), binary_cell_rewrite(strategy, c)):
        out = rewrite(b"-12.50" if length < 12 else b"12345678.90")
        assert out is not None
        value = decode_text(c, out)
        assert isinstance(value, decimal.Decimal)
        assert -value.as_tuple().exponent == decimals       # type: ignore[operator]
        precision = length - (1 if decimals else 0) - (0 if flags else 1)
        assert len(value.as_tuple().digits) <= max(precision, 1)


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
def test_dates_and_times_text(strategy: Strategy) -> None:
    cases: list[tuple[MySQLColumn, bytes, type]] = [
        (col(t.DATE, charset=63), b"1985-04-12", datetime.date),
        (col(t.DATETIME, charset=63), b"1985-04-12 10:11:12", datetime.datetime),
        (col(t.DATETIME, charset=63, decimals=3), b"1985-04-12 10:11:12.123",
         datetime.datetime),
        (col(t.TIMESTAMP, charset=63, decimals=6), b"2001-01-01 00:00:00.000001",
         datetime.datetime),
        (col(t.TIME, charset=63), b"-838:59:59", datetime.timedelta),
        (col(t.TIME, charset=63, decimals=2), b"12:00:00.50", datetime.timedelta),
    ]
    for c, original, kind in cases:
        out = text_cell_rewrite(strategy, c)(original)
        assert out is not None and out != original
        assert isinstance(decode_text(c, out), kind), (c, out)


def _binary_date(payload: bytes) -> datetime.date:
    year, month, day = struct.unpack("<HBB", payload[:4])
    return datetime.date(year, month, day)


def _binary_datetime(payload: bytes) -> datetime.datetime:
    year, month, day, h, mi, s = struct.unpack("<HBBBBB", payload[:7])
    micro = struct.unpack("<I", payload[7:11])[0] if len(payload) == 11 else 0
    return datetime.datetime(year, month, day, h, mi, s, micro)


def _binary_time(payload: bytes) -> datetime.timedelta:
    if not payload:
        return datetime.timedelta(0)
    neg, days, h, mi, s = struct.unpack("<BIBBB", payload[:8])
    micro = struct.unpack("<I", payload[8:12])[0] if len(payload) == 12 else 0
    delta = datetime.timedelta(days=days, hours=h, minutes=mi, seconds=s, microseconds=micro)
    return -delta if neg else delta


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
def test_dates_and_times_binary(strategy: Strategy) -> None:
    """The payloads of the length-prefixed structs, prefix left out in and out."""
    date = binary_cell_rewrite(strategy, col(t.DATE, charset=63))(struct.pack("<HBB", 1985, 4,
                                                                                12))
    assert date is not None and len(date) in (0, 4) and _binary_date(date).year == 1970
    for type_ in (t.DATETIME, t.TIMESTAMP):
        original = struct.pack("<HBBBBBI", 1985, 4, 12, 10, 11, 12, 500)
        out = binary_cell_rewrite(strategy, col(type_, charset=63, decimals=6))(original)
        assert out is not None and len(out) in (0, 4, 7, 11)
        assert _binary_datetime(out).year == 1970
    time = binary_cell_rewrite(strategy, col(t.TIME, charset=63))(
        struct.pack("<BIBBB", 1, 3, 4, 5, 6))
    assert time is not None and len(time) in (0, 8, 12)
    assert _binary_time(time) == datetime.timedelta(0)


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
def test_json_stays_json(strategy: Strategy) -> None:
    c = col(t.JSON, charset=63 if strategy.name == "x" else 45)
    original = b'{"email": "alice@example.com"}'
    for rewrite in (text_cell_rewrite(strategy, c), binary_cell_rewrite(strategy, c)):
        out = rewrite(original)
        assert out is not None
        value = decode_text(c, out)
        assert isinstance(value, str) and "alice" not in value


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
@pytest.mark.parametrize("type_", [t.VARCHAR, t.VAR_STRING, t.STRING, t.BLOB, t.TINY_BLOB,
                                   t.MEDIUM_BLOB, t.LONG_BLOB])
def test_text_within_length(strategy: Strategy, type_: int) -> None:
    original = b"alice.o'neil@example.com"
    for charset, width in ((45, 4), (33, 3), (8, 1)):
        c = col(type_, charset=charset, length=6 * width)
        for rewrite in (text_cell_rewrite(strategy, c), binary_cell_rewrite(strategy, c)):
            out = rewrite(original)
            assert out is not None and out != original
            assert len(out) <= 6 * width
            value = decode_text(c, out) if charset != 8 else out.decode("latin-1")
            assert isinstance(value, str) and len(value) <= 6


def test_text_keeps_non_ascii_in_utf8() -> None:
    c = col(t.VAR_STRING, length=400)
    out = text_cell_rewrite(Strategy("partial", keep_last=3), c)("Zoë Ådahl-Çé".encode())
    assert out is not None and out.decode("utf-8").endswith("-Çé")


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
@pytest.mark.parametrize("type_", [t.STRING, t.VAR_STRING, t.BLOB, t.LONG_BLOB])
def test_binary_strings_are_redacted_bytes(strategy: Strategy, type_: int) -> None:
    c = col(type_, t.BINARY_FLAG, charset=63, length=16)
    original = b"\x00secret-bytes\xff"
    for rewrite in (text_cell_rewrite(strategy, c), binary_cell_rewrite(strategy, c)):
        out = rewrite(original)
        assert isinstance(decode_text(c, out or b""), bytes)
        assert out is not None and out != original and len(out) <= 16


@pytest.mark.parametrize("strategy", MASKING, ids=lambda s: s.name)
def test_enum_set_bit_geometry(strategy: Strategy) -> None:
    for c in (col(t.STRING, t.ENUM_FLAG, length=40), col(t.STRING, t.SET_FLAG, length=40),
              col(t.ENUM), col(t.SET)):
        for rewrite in (text_cell_rewrite(strategy, c), binary_cell_rewrite(strategy, c)):
            assert rewrite(b"gold") == b""       # '' is in every ENUM and SET
    bit = col(t.BIT, t.UNSIGNED_FLAG, charset=63, length=12)
    for rewrite in (text_cell_rewrite(strategy, bit), binary_cell_rewrite(strategy, bit)):
        assert rewrite(b"\x0f\xff") == b"\x00\x00"
        assert decode_text(bit, rewrite(b"\x0f\xff") or b"") == b"\x00\x00"
    geo = col(t.GEOMETRY, t.BINARY_FLAG, charset=63)
    for rewrite in (text_cell_rewrite(strategy, geo), binary_cell_rewrite(strategy, geo)):
        out = rewrite(b"\x00" * 25)
        assert out is not None
        srid, order, kind, x, y = struct.unpack("<IBIdd", out)
        assert (order, kind, x, y) == (1, 1, 0.0, 0.0)


ALL_TYPES = [t.DECIMAL, t.TINY, t.SHORT, t.LONG, t.FLOAT, t.DOUBLE, t.TIMESTAMP, t.LONGLONG,
             t.INT24, t.DATE, t.TIME, t.DATETIME, t.YEAR, t.NEWDATE, t.VARCHAR, t.BIT,
             t.TIMESTAMP2, t.DATETIME2, t.TIME2, t.JSON, t.NEWDECIMAL, t.ENUM, t.SET,
             t.TINY_BLOB, t.MEDIUM_BLOB, t.LONG_BLOB, t.BLOB, t.VAR_STRING, t.STRING,
             t.GEOMETRY]


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_null_stays_null_and_null_strategy_writes_null(type_: int) -> None:
    c = col(type_)
    for strategy in ALL:
        for binary in (False, True):
            assert cell_rewrite(strategy, c, binary)(None) is None
    for binary in (False, True):
        assert cell_rewrite(Strategy("null"), c, binary)(b"x") is None


@pytest.mark.parametrize("type_", [t.NULL, t.VECTOR, 99])
def test_unknown_types_are_null(type_: int) -> None:
    for binary in (False, True):
        assert cell_rewrite(Strategy("redact"), col(type_), binary)(b"\x01\x02") is None


def test_hash_is_deterministic_per_key() -> None:
    c = col(t.VAR_STRING, length=400)
    first = text_cell_rewrite(Strategy("hash", key=KEY), c)
    again = text_cell_rewrite(Strategy("hash", key=KEY), c)
    other = text_cell_rewrite(Strategy("hash", key=b"other"), c)
    assert first(b"alice@example.com") == again(b"alice@example.com")
    assert first(b"alice@example.com") != first(b"bob@example.com")
    assert first(b"alice@example.com") != other(b"alice@example.com")
    n = col(t.LONG)
    assert binary_cell_rewrite(Strategy("hash", key=KEY), n)(struct.pack("<i", 42)) == \
        binary_cell_rewrite(Strategy("hash", key=KEY), n)(struct.pack("<i", 42))
    blob = col(t.BLOB, charset=63)
    assert text_cell_rewrite(Strategy("hash", key=KEY), blob)(b"\x01") == \
        text_cell_rewrite(Strategy("hash", key=KEY), blob)(b"\x01")


def test_partial_keeps_the_last_characters() -> None:
    c = col(t.VAR_STRING, length=400)
    out = text_cell_rewrite(Strategy("partial", keep_last=4), c)(b"4111-1111-1111-4242")
    assert out == b"****-****-****-4242"
    binary = binary_cell_rewrite(Strategy("partial", keep_last=4), c)(b"123-45-6789")
    assert binary == b"***-**-6789"


# -- result plans and messages ------------------------------------------------------------------


def test_plan_follows_the_transform_per_protocol() -> None:
    transform = MaskTransform([None, Strategy("redact"), Strategy("hash", key=KEY)],
                              Strategy("redact"))
    columns = [MySQLColumn(i, "test", "c", "c", n, n, ty, 0, cs, 0, ln) for i, (n, ty, cs, ln)
               in enumerate([("id", t.LONG, 63, 11), ("email", t.VAR_STRING, 45, 400),
                             ("n", t.LONGLONG, 63, 20)])]
    text = plan(transform, columns, binary=False)
    assert set(text) == {1, 2}
    assert text[1](b"alice@example.com") == b"****"
    hashed = text[2](b"1234")
    assert hashed is not None and hashed != b"1234" and int(hashed) >= 0
    binary = plan(transform, columns, binary=True)
    out = binary[2](struct.pack("<q", 1234))
    assert out is not None and len(out) == 8 and out != struct.pack("<q", 1234)
    assert plan(None, columns, binary=False) == {}
    # Another width than the lineage's: every column masked by the default.
    whole = plan(transform, columns[:2], binary=True)
    assert set(whole) == {0, 1}
    assert whole[0](struct.pack("<i", 7)) == struct.pack("<i", 0)
    with pytest.raises(TypeError):
        plan(object(), columns, binary=False)  # type: ignore[arg-type]


def test_detectors_keep_the_column_character_set() -> None:
    latin1 = MySQLColumn(0, "t", "t", "t", "n", "n", t.VAR_STRING, 0, 8, 0, 200)
    rewrites = plan(DetectText(("email",)), [latin1, col(t.LONG), col(t.ENUM)], binary=False)
    assert set(rewrites) == {0}
    assert rewrites[0]("café bob@example.com".encode("latin-1")) == "café ****".encode("latin-1")
    assert rewrites[0](b"nothing here") == b"nothing here"


def test_message_column_scrubs_the_message_only() -> None:
    warnings = [MySQLColumn(i, "", "", "", n, n, ty, fl, cs, 0, ln) for i, (n, ty, fl, cs, ln)
                in enumerate([("Level", t.VAR_STRING, 0, 45, 28),
                              ("Code", t.LONG, t.UNSIGNED_FLAG, 63, 4),
                              ("Message", t.VAR_STRING, 0, 45, 2048)])]
    rewrites = MessageColumn().plan(warnings)
    assert set(rewrites) == {2}
    assert rewrites[2](b"Incorrect integer value: 'jane@example.com' for column 'n' at row 1") \
        == f"Incorrect integer value: '{WITHHELD_VALUE}' at row 1".encode()
    # Another shape: every text column is scrubbed, numbers are left alone.
    other = plan(MessageColumn(), warnings[:2], binary=True)
    assert set(other) == {0}


@pytest.mark.parametrize(("message", "expected"), [
    ("Duplicate entry 'alice@example.com' for key 'email'", f"Duplicate entry '{WITHHELD_VALUE}'"),
    ("Truncated incorrect DOUBLE value: 'abc'",
     f"Truncated incorrect DOUBLE value: '{WITHHELD_VALUE}'"),
    ("Incorrect integer value: 'x' for column `t`.`c` at row 1",
     f"Incorrect integer value: '{WITHHELD_VALUE}' for column `t`.`c` at row 1"),
    # A quote inside the value: everything from the first quote to the last goes.
    ("Duplicate entry 'O'Brien' for key 'name'", f"Duplicate entry '{WITHHELD_VALUE}'"),
    # Cut short inside a value: the rest goes too.
    ("Duplicate entry 'O'Brien", f"Duplicate entry '{WITHHELD_VALUE}'"),
    ("Data too long for column 'x", f"Data too long for column '{WITHHELD_VALUE}'"),
    ("XPATH syntax error: '~078-05-1120'", f"XPATH syntax error: '{WITHHELD_VALUE}'"),
    # An apostrophe in the text counts as a quote: more goes, never less.
    ("Table 'shop.t' doesn't exist", f"Table '{WITHHELD_VALUE}'"),
    ("Lock wait timeout exceeded; try restarting transaction",
     "Lock wait timeout exceeded; try restarting transaction"),
    ("unquoted jane@example.com", "unquoted ****"),
])
def test_scrub_mysql_message(message: str, expected: str) -> None:
    assert scrub_mysql_message(message) == expected


def test_scrub_mysql_error_keeps_codes_and_withholds_signals() -> None:
    out = scrub_mysql_error({"errno": "1062", "C": "23000",
                             "M": "Duplicate entry 'alice@example.com' for key 'email'"})
    assert out["errno"] == "1062" and out["C"] == "23000" and "alice" not in out["M"]
    assert scrub_mysql_error({"C": "45000", "M": "secret 4242"})["M"] == WITHHELD
    assert scrub_mysql_error({"C": "HY000"}) == {"C": "HY000"}
