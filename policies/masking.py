"""Masking strategies: how one cell of a masked column is rewritten on the wire.

A strategy turns a value into its masked form; ``cell_rewrite`` wraps it for one result
column so the masked cell still decodes in the client's driver, in text and in binary format.
Text-like types carry the masked text. Other types get a value of their own type (numbers,
dates, uuids, booleans) or, when no such value can be built, NULL: a cell never carries bytes
its declared type cannot decode, and never the original value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Literal

from policies import detectors
from policies.decision import CellRewrite, Column
from policies.detectors import DETECTORS
from policies.lineage import ANY_MASKED, Output
from protocols import cells

StrategyName = Literal["null", "redact", "partial", "email", "hash", "fake"]
STRATEGIES: tuple[StrategyName, ...] = ("null", "redact", "partial", "email", "hash", "fake")

# PostgreSQL type oids by how a masked value can be written for them.
TEXT_TYPES = frozenset({25, 1043, 1042, 19, 705, 18})  # text varchar bpchar name unknown char
JSON_TYPES = frozenset({114, 3802})                           # json jsonb
INT_TYPES = {21: 2, 23: 4, 20: 8}                             # int2 int4 int8: binary width
FLOAT_TYPES = {700: 4, 701: 8}                                # float4 float8
NUMERIC = 1700
BOOL = 16
UUID = 2950
DATE = 1082
TIMESTAMP_TYPES = frozenset({1114, 1184})                     # timestamp, timestamptz
BYTEA = 17


@dataclass(frozen=True)
class Strategy:
    """One masking strategy with its parameters. ``key`` feeds ``hash`` and ``fake`` (keyed
    HMAC-SHA-256: deterministic per key, so joins and GROUP BY on masked values still work,
    and never an unsalted digest that a dictionary of emails would reverse)."""

    name: StrategyName
    token: str = "****"
    keep_last: int = 0
    keep_first: int = 0
    key: bytes = b""

    def mask_text(self, value: str) -> str | None:
        """The masked form of a text value; None means SQL NULL."""
        if self.name == "null":
            return None
        if self.name == "redact":
            return self.token
        if self.name == "partial":
            return _partial(value, self.keep_first, self.keep_last)
        if self.name == "email":
            return _email(value, self.token)
        if self.name == "hash":
            return self._digest(value).hex()[:32]
        return self._fake(value)

    def mask_number(self, value: str) -> int | None:
        """A masked integer for numeric columns (a value of the column's own type)."""
        if self.name == "null":
            return None
        if self.name in ("hash", "fake"):
            return int.from_bytes(self._digest(value)[:4], "big") & 0x7FFFFFFF
        return 0

    def _digest(self, value: str) -> bytes:
        return hmac.new(self.key, value.encode(), hashlib.sha256).digest()

    def _fake(self, value: str) -> str:
        """Same shape, other characters: digits stay digits, letters letters (case kept),
        everything else as it was; deterministic per key and value."""
        stream = _keystream(self.key, value, len(value))
        out = []
        for ch, b in zip(value, stream, strict=False):
            if ch.isdigit():
                out.append(chr(ord("0") + b % 10))
            elif "a" <= ch <= "z":
                out.append(chr(ord("a") + b % 26))
            elif "A" <= ch <= "Z":
                out.append(chr(ord("A") + b % 26))
            elif ch.isalpha():
                out.append("x")
            else:
                out.append(ch)
        return "".join(out)


def _keystream(key: bytes, value: str, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hmac.new(key, counter.to_bytes(4, "big") + value.encode(),
                        hashlib.sha256).digest()
        counter += 1
    return out[:n]


def _partial(value: str, keep_first: int, keep_last: int) -> str:
    """Letters and digits outside the kept ends become ``*``; separators stay, so a card
    number keeps its grouping: ``****-****-****-4242``."""
    positions = [i for i, ch in enumerate(value) if ch.isalnum()]
    keep = set(positions[:keep_first])
    if keep_last:
        keep |= set(positions[max(0, len(positions) - keep_last):])
    if len(keep) >= len(positions) and positions:
        keep = set()  # a value no longer than what would be kept is masked whole
    return "".join(ch if (i in keep or not ch.isalnum()) else "*"
                   for i, ch in enumerate(value))


def _email(value: str, token: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return token
    return f"{local[0]}***@{domain}"


# -- one column ---------------------------------------------------------------------------------

def cell_rewrite(strategy: Strategy, column: Column) -> CellRewrite:
    """The rewrite of every cell of one result column, in the column's wire format."""
    oid, binary = column.type_oid, column.format == 1
    if strategy.name == "null":
        return null_cell
    if oid in TEXT_TYPES:
        return _text_cell(strategy)
    if oid in JSON_TYPES:
        return _json_cell(strategy, jsonb_binary=binary and oid == 3802)
    if oid in INT_TYPES:
        return _int_cell(strategy, INT_TYPES[oid], binary)
    if oid in FLOAT_TYPES:
        return _float_cell(strategy, FLOAT_TYPES[oid], binary)
    if oid == NUMERIC:
        return _numeric_cell(strategy, binary)
    if oid == BOOL:
        return const_cell(b"\x00" if binary else b"f")
    if oid == UUID:
        return _uuid_cell(strategy, binary)
    if oid == DATE:
        return const_cell(struct.pack("!i", -10957) if binary else b"1970-01-01")
    if oid in TIMESTAMP_TYPES:
        return const_cell(struct.pack("!q", -946684800000000) if binary
                           else b"1970-01-01 00:00:00" + (b"+00" if oid == 1184 else b""))
    if oid == BYTEA and not binary:
        return const_cell(b"\\x")
    if oid == BYTEA:
        return const_cell(b"")
    return null_cell  # a type Wiregate cannot write a value of: NULL, never the original


def null_cell(cell: bytes | None) -> bytes | None:
    return None


def const_cell(value: bytes) -> CellRewrite:
    def rewrite(cell: bytes | None) -> bytes | None:
        return None if cell is None else value
    return rewrite


MEMO_SIZE = 1024


def _utf8(cell: bytes) -> str:
    return cell.decode("utf-8", errors="replace")


class TextCell:
    """A text column's rewrite. Columns repeat values (statuses, padding, cities): the first
    MEMO_SIZE distinct values of a column are remembered. ``memo`` is public so the row walk
    can look a value up without calling back into Python. ``decode`` and ``encode`` turn a
    cell into text and the masked text back into a cell (a MySQL column's character set and
    length)."""

    __slots__ = ("mask", "memo", "spec", "decode", "encode", "limit")

    def __init__(self, mask: Callable[[str], str | None],
                 spec: tuple[int, int, int, bytes] | None = None,
                 decode: Callable[[bytes], str] = _utf8,
                 encode: Callable[[str], bytes] = str.encode, limit: int = 0) -> None:
        self.mask = mask
        self.memo: dict[bytes, bytes | None] = {}
        # The same rewrite as bytes for an ASCII value, done by the row walk without a call
        # (protocols/cells.py; checked equal to mask() in the tests).
        self.spec = spec
        self.decode = decode
        self.encode = encode
        # The most bytes the spec's result may take (0: any); a longer one goes to the
        # call, whose encode cuts it to the column (MySQL).
        self.limit = limit

    def __call__(self, cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        memo = self.memo
        if cell in memo:
            return memo[cell]
        masked = self.mask(self.decode(cell))
        out = None if masked is None else self.encode(masked)
        if len(memo) < MEMO_SIZE:
            memo[cell] = out
        return out


def _text_cell(strategy: Strategy) -> CellRewrite:
    return TextCell(strategy.mask_text, byte_spec(strategy))


def byte_spec(strategy: Strategy) -> tuple[int, int, int, bytes] | None:
    if strategy.name == "partial":
        return (cells.STAR_ALNUM, strategy.keep_first, strategy.keep_last, b"")
    if strategy.name == "email":
        return (cells.EMAIL, 0, 0, strategy.token.encode())
    if strategy.name == "redact":
        return (cells.CONSTANT, 0, 0, strategy.token.encode())
    return None


def _json_cell(strategy: Strategy, jsonb_binary: bool) -> CellRewrite:
    """A JSON value holding a masked column is masked whole, as a JSON string."""
    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        raw = cell[1:] if jsonb_binary else cell
        masked = strategy.mask_text(raw.decode("utf-8", errors="replace"))
        if masked is None:
            return None
        text = '"' + masked.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return (b"\x01" if jsonb_binary else b"") + text.encode()
    return rewrite


def _int_cell(strategy: Strategy, width: int, binary: bool) -> CellRewrite:
    limit = {2: 0x7FFF, 4: 0x7FFFFFFF, 8: 0x7FFFFFFFFFFFFFFF}[width]
    fmt = {2: "!h", 4: "!i", 8: "!q"}[width]

    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        original = str(struct.unpack(fmt, cell)[0]) if binary else cell.decode()
        n = strategy.mask_number(original)
        if n is None:
            return None
        n %= limit
        return struct.pack(fmt, n) if binary else str(n).encode()
    return rewrite


def _float_cell(strategy: Strategy, width: int, binary: bool) -> CellRewrite:
    fmt = "!f" if width == 4 else "!d"

    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        original = str(struct.unpack(fmt, cell)[0]) if binary else cell.decode()
        n = strategy.mask_number(original)
        if n is None:
            return None
        return struct.pack(fmt, float(n)) if binary else str(float(n)).encode()
    return rewrite


def _numeric_cell(strategy: Strategy, binary: bool) -> CellRewrite:
    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        if binary:
            return b"\x00" * 8  # ndigits 0, weight 0, sign +, dscale 0: the numeric zero
        n = strategy.mask_number(cell.decode())
        return None if n is None else str(n).encode()
    return rewrite


def _uuid_cell(strategy: Strategy, binary: bool) -> CellRewrite:
    def rewrite(cell: bytes | None) -> bytes | None:
        if cell is None:
            return None
        original = cell.hex() if binary else cell.decode()
        digest = (hmac.new(strategy.key, original.encode(), hashlib.sha256).digest()[:16]
                  if strategy.name in ("hash", "fake") else bytes(16))
        if binary:
            return digest
        h = digest.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()
    return rewrite


# -- what a profile masks -----------------------------------------------------------------------

class MaskingConfigError(ValueError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ColumnPattern:
    """``schema.table.column``; any part may be ``*`` or hold ``*``/``?`` globs."""

    schema: str
    table: str
    column: str

    def matches(self, schema: str, table: str, column: str) -> bool:
        return fnmatchcase(schema, self.schema) and fnmatchcase(table, self.table) \
            and fnmatchcase(column, self.column)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True)
class MaskRule:
    columns: tuple[ColumnPattern, ...]
    strategy: Strategy


@dataclass(frozen=True)
class MaskingPolicy:
    """A profile's masking: listed columns with their strategies, the strategy for a column
    that inherits PII through an expression, what to do when lineage is unknown, and the
    content detectors to run on every text cell. The HMAC key is named here (env or file)
    and resolved by the proxy."""

    rules: tuple[MaskRule, ...] = ()
    default: Strategy = Strategy("redact")
    on_unresolved: Literal["mask", "refuse"] = "mask"
    detectors: tuple[str, ...] = ()
    key_env: str | None = None
    key_file: str | None = None

    def strategy_for(self, schema: str, table: str, column: str) -> Strategy | None:
        for rule in self.rules:
            if any(p.matches(schema, table, column) for p in rule.columns):
                return rule.strategy
        return None


def parse_masking(raw: object, key: str) -> MaskingPolicy:
    """A profile's ``masking`` table; every error names its key."""
    if not isinstance(raw, dict):
        raise MaskingConfigError(key, "must be a table")
    known = {"default_strategy", "on_unresolved", "detectors", "key_env", "key_file",
             "column"}
    for k in raw:
        if k not in known:
            raise MaskingConfigError(f"{key}.{k}", "unknown key")
    default = _strategy(raw.get("default_strategy", "redact"), {}, f"{key}.default_strategy")
    on_unresolved = raw.get("on_unresolved", "mask")
    if on_unresolved not in ("mask", "refuse"):
        raise MaskingConfigError(f"{key}.on_unresolved", 'must be "mask" or "refuse"')
    detectors = raw.get("detectors", [])
    if not isinstance(detectors, list) or any(d not in DETECTORS for d in detectors):
        raise MaskingConfigError(f"{key}.detectors",
                                 f"must be a list of: {', '.join(DETECTORS)}")
    key_env, key_file = raw.get("key_env"), raw.get("key_file")
    for k, v in (("key_env", key_env), ("key_file", key_file)):
        if v is not None and not (isinstance(v, str) and v):
            raise MaskingConfigError(f"{key}.{k}", "must be a non-empty string")
    if key_env and key_file:
        raise MaskingConfigError(f"{key}.key_file", "give only one of key_env, key_file")
    rules = []
    raw_rules = raw.get("column", [])
    if not isinstance(raw_rules, list):
        raise MaskingConfigError(f"{key}.column", "must be an array of tables ([[...column]])")
    for i, r in enumerate(raw_rules):
        rk = f"{key}.column[{i}]"
        if not isinstance(r, dict):
            raise MaskingConfigError(rk, "must be a table")
        for k in r:
            if k not in ("columns", "strategy", "token", "keep_first", "keep_last"):
                raise MaskingConfigError(f"{rk}.{k}", "unknown key")
        cols = r.get("columns")
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise MaskingConfigError(f"{rk}.columns", "must be a non-empty list of "
                                     "\"schema.table.column\" patterns")
        patterns = []
        for c in cols:
            parts = c.split(".")
            if len(parts) != 3 or not all(parts):
                raise MaskingConfigError(f"{rk}.columns", f"{c!r} is not schema.table.column "
                                         "(use * for any part)")
            patterns.append(ColumnPattern(*parts))
        strategy = _strategy(r.get("strategy", default.name), r, rk)
        rules.append(MaskRule(tuple(patterns), strategy))
    needs_key = any(r.strategy.name in ("hash", "fake") for r in rules) \
        or default.name in ("hash", "fake")
    if needs_key and not (key_env or key_file):
        raise MaskingConfigError(f"{key}.key_env", "hash and fake strategies need a key: "
                                 "key_env or key_file")
    return MaskingPolicy(tuple(rules), default, on_unresolved, tuple(detectors), key_env,
                         key_file)


def _strategy(name: object, params: dict[str, object], key: str) -> Strategy:
    if name not in STRATEGIES:
        raise MaskingConfigError(f"{key}.strategy" if not key.endswith("strategy") else key,
                                 f"must be one of {', '.join(STRATEGIES)}")
    token = params.get("token", "****")
    keep_first, keep_last = params.get("keep_first", 0), params.get("keep_last", 0)
    if not isinstance(token, str):
        raise MaskingConfigError(f"{key}.token", "must be a string")
    for k, v in (("keep_first", keep_first), ("keep_last", keep_last)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise MaskingConfigError(f"{key}.{k}", "must be a whole number >= 0")
    assert isinstance(keep_first, int) and isinstance(keep_last, int)
    return Strategy(name, token=token, keep_first=keep_first,  # type: ignore[arg-type]
                    keep_last=keep_last)


# -- one statement's result ---------------------------------------------------------------------

class MaskTransform:
    """The result transform of one statement: per output position, the strategy its lineage
    calls for. A result whose shape does not match the lineage (a different column count) is
    masked whole by the default strategy: the plan never guesses which column is which. With
    content detectors on, every other text or JSON column is scanned for PII as well."""

    def __init__(self, plan: list[Strategy | None], default: Strategy,
                 detectors: tuple[str, ...] = ()) -> None:
        self.positions = plan
        self.default = default
        self.detectors = detectors

    @classmethod
    def for_outputs(cls, outputs: list[Output], masking: MaskingPolicy,
                    key: bytes) -> MaskTransform | None:
        """None when nothing in the result needs masking (rows then pass untouched)."""
        default = replace(masking.default, key=key)
        plan: list[Strategy | None] = []
        for o in outputs:
            chosen = [s for s in (masking.strategy_for(c.schema, c.table, c.column)
                                  for c in o.columns) if s is not None]
            if not o.resolved or ANY_MASKED in o.sources:
                plan.append(default)           # on_unresolved = "refuse" is the policy's call
            elif chosen and not o.derived and len(o.columns) == 1:
                plan.append(replace(chosen[0], key=key))
            elif chosen:
                plan.append(default)           # derived from a masked column: masked whole
            else:
                plan.append(None)
        if not any(plan) and not masking.detectors:
            return None
        return cls(plan, default, masking.detectors)

    def plan(self, columns: Sequence[Column]) -> dict[int, CellRewrite]:
        if len(columns) != len(self.positions):
            return {c.index: cell_rewrite(self.default, c) for c in columns}
        out = {c.index: cell_rewrite(s, c)
               for c, s in zip(columns, self.positions, strict=True) if s is not None}
        if self.detectors:
            for c in columns:
                if c.index not in out and (c.type_oid in TEXT_TYPES or c.type_oid in JSON_TYPES):
                    out[c.index] = _DetectCell(self.detectors, c.type_oid in JSON_TYPES,
                                               c.format == 1 and c.type_oid == 3802)
        return out


class _DetectCell:
    """A cell of a column nobody listed, scanned by the content detectors: most cells fail
    the byte pre-check and go out as they came; a JSON value with a finding becomes a JSON
    string of the scrubbed text, so it still parses."""

    __slots__ = ("kinds", "json", "jsonb_binary", "memo", "codec")

    def __init__(self, kinds: tuple[str, ...], json: bool, jsonb_binary: bool,
                 codec: str = "utf-8") -> None:
        self.kinds = kinds
        self.json = json
        self.jsonb_binary = jsonb_binary
        self.memo: dict[bytes, bytes | None] = {}
        self.codec = codec   # a MySQL column's character set (JSON is always UTF-8)

    def __call__(self, cell: bytes | None) -> bytes | None:
        if cell is None or not detectors.might_contain(cell):
            return cell
        memo = self.memo
        if cell in memo:
            return memo[cell]
        raw = cell[1:] if self.jsonb_binary else cell
        text = raw.decode(self.codec, errors="replace")
        clean = detectors.scrub(text, self.kinds)
        if clean == text:
            out = cell
        elif self.json:
            quoted = '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'
            out = (b"\x01" if self.jsonb_binary else b"") + quoted.encode()
        else:
            out = clean.encode(self.codec, errors="replace")
        if len(memo) < MEMO_SIZE:
            memo[cell] = out
        return out


# -- errors and notices -------------------------------------------------------------------------

WITHHELD = "withheld by wiregate: the statement reads masked columns"
# From the first double quote to the last: the server does not escape quotes inside the value
# it quotes (invalid input syntax for type integer: "a"b"), so nothing in between is kept.
_QUOTED = re.compile(r'"[\s\S]*"')
_KEY_VALUE = re.compile(r"\)=\((.*)\)")
# Fields that name things, never hold values: severity, code, position, source location,
# and the schema/table/column/type/constraint the error is about.
_NAMING_FIELDS = frozenset("SVCPpFLRstcdn")
_RAISED = ("P0",)   # PL/pgSQL RAISE: the message is whatever the function put in it


def scrub_message(fields: dict[str, str]) -> dict[str, str]:
    """An error or notice of a statement that reads masked columns, with every place a value
    can sit taken out: quoted values and key values in the message and hint, the detail,
    context and internal query withheld, and a message a function raised withheld whole."""
    code = fields.get("C", "")
    severity = fields.get("V", fields.get("S", ""))
    raised = code.startswith(_RAISED) or severity not in ("ERROR", "FATAL", "PANIC")
    out: dict[str, str] = {}
    for key, value in fields.items():
        if key in _NAMING_FIELDS:
            out[key] = value
        elif key == "M":
            out[key] = WITHHELD if raised else _scrub_text(value)
        elif key == "H":
            out[key] = _scrub_text(value)
        elif key == "D":
            out[key] = WITHHELD
        # W (context), q (internal query) and anything unknown are dropped.
    return out


def _scrub_text(text: str) -> str:
    text = _KEY_VALUE.sub(")=(***)", _QUOTED.sub('"***"', text))
    return detectors.scrub(text)
