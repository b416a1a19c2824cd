"""Runs of row packets (text and binary protocol): the planned cells of every row rewritten in
one call.

A masked result changes a cell of every row, so this is the only MySQL code that runs once per
row. ``_rows.c`` implements both walks in C and is used when it was built; the Python
versions here are the reference (the tests check that both give the same bytes) and the
fallback where no compiler was available at install time.
"""

from __future__ import annotations

from protocols.cells import Rewrite, RowPlan, Spec
from protocols.mysql.binary import rewrite_binary_row
from protocols.mysql.messages import lenenc_bytes, lenenc_int_at
from protocols.mysql.packets import MAX_PACKET, PacketError

__all__ = ["RowPlan", "py_rewrite_binary_rows", "py_rewrite_text_rows", "rewrite_binary_rows",
           "rewrite_text_rows"]

def py_rewrite_text_rows(data: bytes | bytearray, start: int, seq: int,
                         columns: tuple[int, ...], rewrites: tuple[Rewrite, ...],
                         memos: tuple[dict[bytes, bytes | None] | None, ...],
                         specs: tuple[Spec | None, ...], limits: tuple[int, ...],
                         deprecate_eof: bool) -> tuple[bytes, int, int]:
    """The reference walk (specs and limits are a speed-up of the C walk only)."""
    if not columns:
        raise ValueError("columns, rewrites, memos, specs and limits differ in length")
    out = bytearray()
    pos = start
    size = len(data)
    last = columns[-1]
    while size - pos >= 4:
        n = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        if n == 0 or n >= MAX_PACKET or pos + 4 + n > size or data[pos + 3] != seq & 0xFF:
            break
        first = data[pos + 4]
        if first == 0xFF or (first == 0xFE and (n < 9 or deprecate_eof)):
            break
        row = bytes(data[pos + 4:pos + 4 + n])
        body = bytearray()
        cell = copied = 0
        k = 0
        for i in range(last + 1):
            try:
                length, value_at = lenenc_int_at(row, cell)
            except Exception as exc:
                raise ValueError("text row: invalid or truncated value") from exc
            cell_end = value_at + (length or 0)
            if cell_end > n:
                raise ValueError("text row: value past the end of the packet")
            if columns[k] == i:
                value = None if length is None else row[value_at:cell_end]
                memo = memos[k]
                got = memo[value] if memo is not None and value is not None \
                    and value in memo else rewrites[k](value)
                body += row[copied:cell]
                body += b"\xfb" if got is None else lenenc_bytes(got)
                copied = cell_end
                k += 1
            cell = cell_end
        body += row[copied:]
        if len(body) >= MAX_PACKET:
            break
        out += len(body).to_bytes(3, "little") + bytes([seq & 0xFF]) + body
        seq = (seq + 1) & 0xFF
        pos += 4 + n
    return bytes(out), pos, seq


def py_rewrite_binary_rows(data: bytes | bytearray, start: int, seq: int, types: bytes,
                           columns: tuple[int, ...], rewrites: tuple[Rewrite, ...],
                           memos: tuple[dict[bytes, bytes | None] | None, ...],
                           specs: tuple[Spec | None, ...], limits: tuple[int, ...],
                           deprecate_eof: bool) -> tuple[bytes, int, int]:
    """The reference walk of binary rows (a row starts with 0x00, a terminator never does)."""
    if not columns:
        raise ValueError("columns, rewrites, memos, specs and limits differ in length")
    plan = dict(zip(columns, rewrites, strict=True))
    kinds = list(types)
    out = bytearray()
    pos = start
    size = len(data)
    while size - pos >= 4:
        n = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        if n == 0 or n >= MAX_PACKET or pos + 4 + n > size or data[pos + 3] != seq & 0xFF \
                or data[pos + 4] != 0:
            break
        try:
            body = rewrite_binary_row(bytes(data[pos + 4:pos + 4 + n]), kinds, plan)
        except PacketError as exc:
            raise ValueError(str(exc)) from None
        if len(body) >= MAX_PACKET:
            break
        out += len(body).to_bytes(3, "little") + bytes([seq & 0xFF]) + body
        seq = (seq + 1) & 0xFF
        pos += 4 + n
    return bytes(out), pos, seq


try:
    from protocols.mysql._rows import rewrite_binary_rows as c_rewrite_binary_rows
    from protocols.mysql._rows import rewrite_text_rows as c_rewrite_text_rows
except ImportError:   # built without a compiler: the reference walks
    c_rewrite_text_rows = c_rewrite_binary_rows = None

rewrite_text_rows = c_rewrite_text_rows or py_rewrite_text_rows
rewrite_binary_rows = c_rewrite_binary_rows or py_rewrite_binary_rows
