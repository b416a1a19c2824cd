"""Masked cells for MySQL/MariaDB result rows, in the text and the binary protocol.

The MySQL counterpart of ``policies.masking.cell_rewrite``: a ``Strategy`` decides what a
masked value is; this module writes it so the client's driver still decodes the cell as the
column's declared type (integers in range and sign, valid decimals, dates, times, JSON, text
within the column's length), and writes NULL where no valid value of the type can be built.
A cell never carries bytes its type cannot decode, and never the original value.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from policies import detectors
from policies.decision import ResultTransform
from policies.masking import (
    WITHHELD,
    MaskTransform,
    Strategy,
    TextCell,
    _DetectCell,
    byte_spec,
    const_cell,
    null_cell,
)
from protocols.mysql.types import (
    BINARY_CHARSET,
    BIT,
    BLOB,
    DATE,
    DATETIME,
    DATETIME2,
    DECIMAL,
    DOUBLE,
    ENUM,
    ENUM_FLAG,
    FLOAT,
    GEOMETRY,
    INT24,
    JSON,
    LONG,
    LONG_BLOB,
    LONGLONG,
    MEDIUM_BLOB,
    NEWDATE,
    NEWDECIMAL,
    NULL,
    SET,
    SET_FLAG,
    SHORT,
    STRING,
    TIME,
    TIME2,
    TIMESTAMP,
    TIMESTAMP2,
    TINY,
    TINY_BLOB,
    UNSIGNED_FLAG,
    VAR_STRING,
    VARCHAR,
    VECTOR,
    YEAR,
)

__all__ = [
    "DetectText", "MessageColumn", "MySQLColumn", "WITHHELD_VALUE", "binary_cell_rewrite",
    "cell_rewrite", "plan", "scrub_mysql_error", "scrub_mysql_message", "text_cell_rewrite",
    "withhold_mysql_error",
]

CellRewrite = Callable[[bytes | None], bytes | None]


# Integer types: width in the binary protocol and bits of their range.
_INTS: dict[int, tuple[int, int]] = {
    TINY: (1, 8), SHORT: (2, 16), INT24: (4, 24), LONG: (4, 32), LONGLONG: (8, 64),
}
_INT_FORMATS = {1: "b", 2: "h", 4: "i", 8: "q"}
_DATES = frozenset({DATE, NEWDATE})
_DATETIMES = frozenset({DATETIME, DATETIME2, TIMESTAMP, TIMESTAMP2})
_TIMES = frozenset({TIME, TIME2})
_STRINGS = frozenset({VARCHAR, VAR_STRING, STRING, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB})
_DECIMALS = frozenset({DECIMAL, NEWDECIMAL})

# Character sets by the most bytes one character takes (everything else: 4, utf8mb4's).
_SINGLE_BYTE = frozenset({5, 8, 11, 15, 31, 47, 48, 49, 63, 65, 94})
_UTF8MB3 = frozenset({33, 76, 83, *range(192, 216), 223})
_LATIN1 = frozenset({5, 8, 15, 31, 47, 48, 49, 94})
_ASCII = frozenset({11, 65})

# The masked date and time: the epoch, as the PostgreSQL side writes it. TIMESTAMP's range
# starts one second later.
_EPOCH = (1970, 1, 1)
_POINT_ZERO = struct.pack("<IBIdd", 0, 1, 1, 0.0, 0.0)  # SRID 0 + WKB POINT(0 0)


@dataclass(frozen=True)
class MySQLColumn:
    """A result column as the server described it (Protocol::ColumnDefinition41): ``type`` is
    the MYSQL_TYPE_* byte, ``charset`` the collation id (63: binary), ``length`` the most
    bytes a value takes, ``decimals`` the scale or fractional-second digits."""

    index: int
    schema: str
    table: str
    org_table: str
    name: str
    org_name: str
    type: int
    flags: int = 0
    charset: int = 45
    decimals: int = 0
    length: int = 0

    @property
    def unsigned(self) -> bool:
        return bool(self.flags & UNSIGNED_FLAG)

    @property
    def binary(self) -> bool:
        """Bytes, not text: BINARY/VARBINARY/BLOB, BIT, GEOMETRY."""
        return self.charset == BINARY_CHARSET or self.type in (BIT, GEOMETRY)

    @property
    def enum_or_set(self) -> bool:
        """Servers describe ENUM and SET results as STRING with a flag."""
        return self.type in (ENUM, SET) or bool(self.flags & (ENUM_FLAG | SET_FLAG))


def cell_rewrite(strategy: Strategy, col: MySQLColumn, binary_protocol: bool) -> CellRewrite:
    """The rewrite of every cell of one column in the row format the result set uses
    (text: COM_QUERY; binary: COM_STMT_EXECUTE)."""
    return binary_cell_rewrite(strategy, col) if binary_protocol \
        else text_cell_rewrite(strategy, col)


def text_cell_rewrite(strategy: Strategy, col: MySQLColumn) -> CellRewrite:
    """Text-protocol rewrite: a cell is the value's text (the length-encoded string's payload,
    without its length prefix); None is NULL, in and out."""
    if strategy.name == "null" or col.type in (NULL, VECTOR):
        return null_cell
    kind = col.type
    if kind in _INTS or kind == YEAR:
        return _int_cell(strategy, col, binary=False)
    if kind in (FLOAT, DOUBLE):
        return _float_cell(strategy, col, binary=False)
    if kind in _DECIMALS:
        return _decimal_cell(strategy, col)
    if kind in _DATES:
        return const_cell(b"%04d-%02d-%02d" % _EPOCH)
    if kind in _DATETIMES:
        second = 1 if kind in (TIMESTAMP, TIMESTAMP2) else 0
        return const_cell(b"%04d-%02d-%02d 00:00:%02d" % (*_EPOCH, second) + _fraction(col))
    if kind in _TIMES:
        return const_cell(b"00:00:00" + _fraction(col))
    return _common_cell(strategy, col)


def binary_cell_rewrite(strategy: Strategy, col: MySQLColumn) -> CellRewrite:
    """Binary-protocol rewrite of one cell as it sits in a row: integers (TINY, SHORT, INT24,
    LONG, LONGLONG, YEAR), FLOAT and DOUBLE as their fixed-width little-endian bytes; every
    other type as the payload WITHOUT its length prefix (length-encoded strings, and the DATE,
    DATETIME, TIMESTAMP and TIME structs, whose one-byte length is that prefix). The result
    has the same form: the caller writes the prefix of the new payload. None is NULL (the
    row's null bitmap), in and out."""
    if strategy.name == "null" or col.type in (NULL, VECTOR):
        return null_cell
    kind = col.type
    if kind in _INTS or kind == YEAR:
        return _int_cell(strategy, col, binary=True)
    if kind in (FLOAT, DOUBLE):
        return _float_cell(strategy, col, binary=True)
    if kind in _DECIMALS:
        return _decimal_cell(strategy, col)
    if kind in _DATES:
        return const_cell(struct.pack("<HBB", *_EPOCH))
    if kind in _DATETIMES:
        second = 1 if kind in (TIMESTAMP, TIMESTAMP2) else 0
        return const_cell(struct.pack("<HBBBBB", *_EPOCH, 0, 0, second))
    if kind in _TIMES:
        return const_cell(struct.pack("<BIBBB", 0, 0, 0, 0, 0))  # +0 days 00:00:00
    return _common_cell(strategy, col)


def _common_cell(strategy: Strategy, col: MySQLColumn) -> CellRewrite:
    """Types written the same in both protocols (length-encoded strings)."""
    if col.enum_or_set:
        return const_cell(b"")  # '' is a member of every ENUM (the error value) and SET
    if col.type == GEOMETRY:
        return const_cell(_POINT_ZERO)
    if col.type == BIT:
        return _bit_cell()
    if col.type == JSON:
        return _json_cell(strategy)
    if col.binary:
        return _bytes_cell(strategy, col)
    if col.type in _STRINGS:
        return _text_cell(strategy, col)
    return null_cell  # a type Wiregate cannot write a value of: NULL, never the original


# -- cells ---------------------------------------------------------------------------------------


def _fraction(col: MySQLColumn) -> bytes:
    """Fractional seconds as the column prints them (``decimals`` 1-6; more: none)."""
    return b"." + b"0" * col.decimals if 0 < col.decimals <= 6 else b""


def _int_range(col: MySQLColumn) -> tuple[int, int]:
    """The column's values: masked integers are reduced into ``[0, hi]``."""
    if col.type == YEAR:
        return 2, 2155
    width, bits = _INTS[col.type]
    hi = (1 << bits) - 1 if col.unsigned else (1 << (bits - 1)) - 1
    return width, hi


def _int_cell(strategy: Strategy, col: MySQLColumn, binary: bool) -> CellRewrite:
    width, hi = _int_range(col)
    fmt = "<" + (_INT_FORMATS[width].upper() if col.unsigned or col.type == YEAR
                 else _INT_FORMATS[width])

    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        original = str(struct.unpack(fmt, cell)[0]) if binary else cell.decode("ascii", "replace")
        n = strategy.mask_number(original)
        if n is None:
            return None
        if col.type == YEAR:
            n = 1901 + n % 255 if strategy.name in ("hash", "fake") else _EPOCH[0]
        else:
            n %= hi + 1
        return struct.pack(fmt, n) if binary else str(n).encode()
    return rewrite


def _float_cell(strategy: Strategy, col: MySQLColumn, binary: bool) -> CellRewrite:
    fmt = "<f" if col.type == FLOAT else "<d"

    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        original = repr(struct.unpack(fmt, cell)[0]) if binary \
            else cell.decode("ascii", "replace")
        n = strategy.mask_number(original)
        if n is None:
            return None
        if col.type == FLOAT:
            n %= 1 << 24  # exact in a 4-byte float
        return struct.pack(fmt, float(n)) if binary else str(n).encode()
    return rewrite


def _decimal_cell(strategy: Strategy, col: MySQLColumn) -> CellRewrite:
    """A decimal of the column's precision and scale (``length`` counts the digits, the point
    and, for a signed column, the sign): the masked integer reduced to the digits it has."""
    scale = col.decimals if 0 <= col.decimals <= 38 else 0
    precision = col.length - (1 if scale else 0) - (0 if col.unsigned else 1)
    whole = max(precision - scale, 0) if col.length else 18
    limit = 10 ** min(whole, 18)

    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        n = strategy.mask_number(cell.decode("ascii", "replace"))
        if n is None:
            return None
        text = str(n % limit if whole else 0)
        return (text + ("." + "0" * scale if scale else "")).encode()
    return rewrite


def _json_cell(strategy: Strategy) -> CellRewrite:
    """A JSON value holding a masked column is masked whole, as a JSON string."""
    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        masked = strategy.mask_text(cell.decode("utf-8", "replace"))
        return None if masked is None else json.dumps(masked).encode()
    return rewrite


def _bit_cell() -> CellRewrite:
    """BIT(n) arrives as its bytes, big-endian: as many zero bytes (0 fits every n)."""
    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        return bytes(len(cell))
    return rewrite


def _bytes_cell(strategy: Strategy, col: MySQLColumn) -> CellRewrite:
    """Binary strings (BINARY, VARBINARY, BLOB): a keyed digest for ``hash``/``fake``, the
    redaction token's bytes otherwise; cut to the column's length."""
    digest = replace(strategy, name="hash")

    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        if strategy.name in ("hash", "fake"):
            out = bytes.fromhex(digest.mask_text(cell.hex()) or "")
        else:
            out = strategy.token.encode()
        return out[:col.length] if col.length else out
    return rewrite


def _text_cell(strategy: Strategy, col: MySQLColumn) -> CellRewrite:
    """Text in the column's character set, cut to whole characters within its length."""
    codec = "latin-1" if col.charset in _LATIN1 else "ascii" if col.charset in _ASCII \
        else "utf-8"
    width = 1 if col.charset in _SINGLE_BYTE else 3 if col.charset in _UTF8MB3 else 4
    chars = col.length // width if col.length else 0
    # Every codec here keeps ASCII as it is, so the row walk's byte-level spec gives what
    # the call gives for an ASCII value, as long as it fits the column (``limit``).
    return TextCell(strategy.mask_text, byte_spec(strategy),
                    lambda cell: cell.decode(codec, "replace"),
                    lambda text: _cut(text, codec, chars, col.length),
                    limit=min(chars, col.length) if chars else col.length)


def _cut(text: str, codec: str, chars: int, length: int) -> bytes:
    if chars and len(text) > chars:
        text = text[:chars]
    out = text.encode(codec, "replace")
    while length and len(out) > length and text:
        text = text[:-1]
        out = text.encode(codec, "replace")
    return out


def _codec(col: MySQLColumn) -> str:
    return "latin-1" if col.charset in _LATIN1 else "ascii" if col.charset in _ASCII \
        else "utf-8"


# -- a statement's result set ------------------------------------------------------------------


def plan(transform: ResultTransform | None, columns: Sequence[MySQLColumn],
         binary: bool) -> dict[int, CellRewrite]:
    """The MySQL counterpart of ``MaskTransform.plan``, called once per result set with the
    transform ``GuardPolicy.decide`` returned: for the columns to rewrite, the rewrite of one
    cell (raw value bytes: see ``text_cell_rewrite`` and ``binary_cell_rewrite``). A result
    whose width is not the lineage's is masked whole by the default strategy (the plan never
    guesses which column is which); with content detectors on, every other text or JSON
    column is scanned as well. An empty mapping: the rows go out untouched."""
    if transform is None:
        return {}
    if isinstance(transform, MaskTransform):
        if len(columns) != len(transform.positions):
            return {c.index: cell_rewrite(transform.default, c, binary) for c in columns}
        out = {c.index: cell_rewrite(s, c, binary)
               for c, s in zip(columns, transform.positions, strict=True) if s is not None}
        if transform.detectors:
            out.update(_detect(transform.detectors, [c for c in columns if c.index not in out]))
        return out
    if isinstance(transform, DetectText | MessageColumn):
        return transform.plan(columns)
    raise TypeError(f"not a MySQL result transform: {type(transform).__name__}")


def _detect(kinds: tuple[str, ...], columns: Sequence[MySQLColumn]) -> dict[int, CellRewrite]:
    """Content detectors on the columns that can hold text: strings in a character set (not
    ENUM/SET, whose members are fixed) and JSON. Cells are the same bytes in both
    protocols."""
    out: dict[int, CellRewrite] = {}
    for c in columns:
        if c.type == JSON:
            out[c.index] = _DetectCell(kinds, True, False)
        elif c.type in _STRINGS and not c.binary and not c.enum_or_set:
            out[c.index] = _DetectCell(kinds, False, False, _codec(c))
    return out


@dataclass(frozen=True)
class DetectText:
    """Rows that hold no masked column but whose lineage is not known column by column (SHOW
    output, a string of several statements): only the content detectors run, on every text
    column."""

    detectors: tuple[str, ...]

    def plan(self, columns: Sequence[Any]) -> dict[int, CellRewrite]:
        return _detect(self.detectors, columns)


@dataclass(frozen=True)
class MessageColumn:
    """SHOW WARNINGS / SHOW ERRORS rows (Level, Code, Message): a message quotes the values an
    earlier statement choked on, masked ones included, so it is scrubbed like an error
    message. A result of another width has every text column scrubbed."""

    position: int = 2
    width: int = 3

    def plan(self, columns: Sequence[Any]) -> dict[int, CellRewrite]:
        picked = [columns[self.position]] if len(columns) == self.width else [
            c for c in columns if c.type in _STRINGS and not c.binary]
        return {c.index: _message_cell(c) for c in picked}


def _message_cell(col: MySQLColumn) -> CellRewrite:
    codec = _codec(col)
    return TextCell(scrub_mysql_message, None, lambda cell: cell.decode(codec, "replace"),
                    lambda text: text.encode(codec, "replace"))


# -- errors and warnings ------------------------------------------------------------------------

WITHHELD_VALUE = "...withheld by wiregate..."


def scrub_mysql_message(message: str) -> str:
    """An error or warning message with its values taken out. MySQL quotes values in single
    quotes and does not escape quotes inside them (Duplicate entry 'O'Brien' for key 'name'),
    so everything from the first quote to the last goes, names included. A message cut short
    inside a value (an odd number of quotes, or text glued to the last quote) loses the rest
    as well. The content detectors then take unquoted PII."""
    first = message.find("'")
    if first >= 0:
        last = message.rfind("'")
        tail = message[last + 1:]
        if message.count("'") % 2 or (tail and not (tail[0].isspace() or tail[0] in ".,;:)")):
            tail = ""
        message = message[:first] + "'" + WITHHELD_VALUE + "'" + tail
    return detectors.scrub(message)


def scrub_mysql_error(fields: dict[str, str]) -> dict[str, str]:
    """The ``MessageScrub`` of MySQL statements that read masked columns: an ERR packet's
    message (field "M") scrubbed by ``scrub_mysql_message``, or withheld whole when the
    SQLSTATE (field "C", if given) is of class 45, SIGNAL's own: its text is whatever the
    code put in it. Every other field (error number, SQLSTATE) is kept."""
    out = dict(fields)
    if "M" in out:
        raised = out.get("C", "").startswith("45")
        out["M"] = WITHHELD if raised else scrub_mysql_message(out["M"])
    return out


def withhold_mysql_error(fields: dict[str, str]) -> dict[str, str]:
    """The ``MessageScrub`` of MySQL statements that run stored code (CALL, a stored
    function, a compound block): a SIGNAL there may say anything, so the message is
    withheld whole."""
    out = dict(fields)
    if "M" in out:
        out["M"] = WITHHELD
    return out
