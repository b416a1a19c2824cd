"""The prepared-statement (binary) protocol: COM_STMT_PREPARE's answer, COM_STMT_EXECUTE with
its parameters, and binary result rows, cell by cell as raw bytes so a caller can rewrite one
cell and re-encode the row without decoding the others. Sans-IO."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from protocols.mysql.messages import COM_STMT_EXECUTE, Reader, lenenc_int, lenenc_int_at
from protocols.mysql.packets import PacketError
from protocols.mysql.types import FIXED_WIDTH, TEMPORAL

CURSOR_TYPE_READ_ONLY = 0x01


@dataclass(frozen=True)
class PrepareOK:
    statement_id: int
    columns: int
    params: int
    warnings: int = 0

    def encode(self) -> bytes:
        return struct.pack("<BIHHBH", 0, self.statement_id, self.columns, self.params, 0,
                           self.warnings)

    @classmethod
    def decode(cls, payload: bytes) -> PrepareOK:
        r = Reader(payload, "prepare OK")
        if r.uint(1) != 0:
            raise PacketError("prepare OK: wrong header")
        stmt, cols, params = r.uint(4), r.uint(2), r.uint(2)
        r.uint(1)
        warnings = r.uint(2) if r.left >= 2 else 0
        return cls(stmt, cols, params, warnings)


@dataclass(frozen=True)
class Param:
    """One bound parameter: its type (with 0x80 in ``flags`` for unsigned) and its raw value
    in the binary encoding of that type; None is SQL NULL."""

    type: int
    value: bytes | None
    flags: int = 0


@dataclass(frozen=True)
class Execute:
    statement_id: int
    params: tuple[Param, ...] = ()
    cursor: int = 0
    new_params_bound: bool = True

    def encode(self) -> bytes:
        out = bytearray(struct.pack("<BIBI", COM_STMT_EXECUTE, self.statement_id, self.cursor,
                                    1))
        if self.params:
            bitmap = bytearray((len(self.params) + 7) // 8)
            for i, p in enumerate(self.params):
                if p.value is None:
                    bitmap[i // 8] |= 1 << (i % 8)
            out += bitmap + bytes([1 if self.new_params_bound else 0])
            if self.new_params_bound:
                out += b"".join(bytes([p.type, p.flags]) for p in self.params)
            for p in self.params:
                if p.value is not None:
                    out += p.value
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes, param_count: int,
               previous_types: Sequence[tuple[int, int]] = ()) -> Execute:
        """``param_count`` comes from the statement's PrepareOK; ``previous_types`` are the
        types bound by an earlier execution, used when this one does not send them."""
        r = Reader(payload, "COM_STMT_EXECUTE")
        if r.uint(1) != COM_STMT_EXECUTE:
            raise PacketError("COM_STMT_EXECUTE: wrong command")
        stmt, cursor = r.uint(4), r.uint(1)
        r.uint(4)   # iteration count, always 1
        if not param_count:
            return cls(stmt, (), cursor, False)
        bitmap = r.raw((param_count + 7) // 8)
        bound = r.uint(1) == 1
        if bound:
            types = [(r.uint(1), r.uint(1)) for _ in range(param_count)]
        elif len(previous_types) == param_count:
            types = list(previous_types)
        else:
            raise PacketError("COM_STMT_EXECUTE: parameter types were never sent", errno=1210)
        params = []
        for i, (type_, flags) in enumerate(types):
            if bitmap[i // 8] & (1 << (i % 8)):
                params.append(Param(type_, None, flags))
            else:
                params.append(Param(type_, _value(r, type_), flags))
        return cls(stmt, tuple(params), cursor, bound)


def _value(r: Reader, type_: int) -> bytes:
    """The raw bytes of one binary value as it sits on the wire (length prefixes included)."""
    width = FIXED_WIDTH.get(type_)
    if width is not None:
        return r.raw(width)
    start = r.pos
    if type_ in TEMPORAL:
        r.raw(r.uint(1))
    else:
        n = r.lenenc_int()
        if n is None:
            raise PacketError("binary value: NULL marker inside a value")
        r.raw(n)
    return r.data[start:r.pos]


def binary_row(payload: bytes, types: Sequence[int]) -> tuple[bytes | None, ...]:
    """A binary result row: each cell's raw bytes (with its length prefix), None for NULL."""
    r = Reader(payload, "binary row")
    if r.uint(1) != 0x00:
        raise PacketError("binary row: wrong header")
    bitmap = r.raw((len(types) + 9) // 8)
    out: list[bytes | None] = []
    for i, type_ in enumerate(types):
        bit = i + 2
        if bitmap[bit // 8] & (1 << (bit % 8)):
            out.append(None)
        else:
            out.append(_value(r, type_))
    if r.left:
        raise PacketError("binary row: bytes after the last value")
    return tuple(out)


def encode_binary_row(values: Sequence[bytes | None]) -> bytes:
    """The row for raw cells as ``binary_row`` returns them (prefixes included)."""
    bitmap = bytearray((len(values) + 9) // 8)
    for i, v in enumerate(values):
        if v is None:
            bit = i + 2
            bitmap[bit // 8] |= 1 << (bit % 8)
    return b"\x00" + bytes(bitmap) + b"".join(v for v in values if v is not None)


def rewrite_binary_row(payload: bytes, types: Sequence[int],
                       rewrites: Mapping[int, Callable[[bytes | None], bytes | None]]) -> bytes:
    """The row with the planned cells rewritten. A rewrite sees and returns a cell without
    its length prefix (fixed-width types have none); NULL is None, through the bitmap."""
    cells = list(binary_row(payload, types))
    for index, fn in rewrites.items():
        raw = cells[index]
        type_ = types[index]
        fixed = type_ in FIXED_WIDTH
        if raw is None:
            value = None
        elif fixed:
            value = raw
        elif type_ in TEMPORAL:
            value = raw[1:]
        else:
            _, start = lenenc_int_at(raw, 0)
            value = raw[start:]
        new = fn(value)
        if new is None:
            cells[index] = None
        elif fixed:
            if len(new) != FIXED_WIDTH[type_]:
                raise PacketError("binary row: a rewrite changed a fixed-width value's size")
            cells[index] = new
        elif type_ in TEMPORAL:
            cells[index] = bytes([len(new)]) + new
        else:
            cells[index] = lenenc_int(len(new)) + new
    return encode_binary_row(cells)


def string_value(data: bytes) -> bytes:
    """A string parameter or cell in the binary encoding (length-encoded)."""
    return lenenc_int(len(data)) + data
