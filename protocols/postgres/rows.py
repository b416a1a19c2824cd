"""DataRow runs: find consecutive DataRows in a chunk and rewrite planned cells in all of them.

A masked result changes one or two cells of every row, so this is the only code in the proxy
that runs once per row. It works on a run of rows at a time, never one message object per
row. ``_rows.c`` implements the same two functions in C and is used when it was built; the
Python versions here are the reference (the tests check that both give the same bytes) and
the fallback where no compiler was available at install time.
"""

from __future__ import annotations

import struct

from protocols.cells import Rewrite, RowPlan, Spec
from protocols.postgres.messages import ProtocolViolation

__all__ = ["RowPlan", "py_rewrite_rows", "py_row_run_end", "rewrite_rows", "row_run_end"]

_H = struct.Struct("!h")
_I = struct.Struct("!i")


def py_row_run_end(data: bytes, pos: int, limit: int) -> int:
    n = len(data)
    pos = max(pos, 0)
    while pos + 5 <= n and data[pos] == 0x44:
        length = _I.unpack_from(data, pos + 1)[0]
        if length < 4 or length > limit or pos + 1 + length > n:
            break
        pos += 1 + length
    return pos


def py_rewrite_rows(data: bytes, start: int, end: int, columns: tuple[int, ...],
                    rewrites: tuple[Rewrite, ...],
                    memos: tuple[dict[bytes, bytes | None] | None, ...],
                    specs: tuple[Spec | None, ...] = ()) -> bytes:
    """The reference walk: specs are a speed-up of the C walk only, so they are not used."""
    if start < 0 or end > len(data) or start > end:
        raise ValueError("row span out of range")
    last = columns[-1] if columns else -1
    out: list[bytes] = []
    pos = start
    while pos < end:
        if end - pos < 7 or data[pos] != 0x44:
            raise ValueError("DataRow: truncated")
        length = _I.unpack_from(data, pos + 1)[0]
        row_end = pos + 1 + length
        if length < 6 or row_end > end:
            raise ValueError("DataRow: truncated")
        count = _H.unpack_from(data, pos + 5)[0]
        pieces: list[bytes] = []
        cell = copied = pos + 7
        k = 0
        for i in range(min(count, last + 1)):
            if cell + 4 > row_end:
                raise ValueError("DataRow: truncated")
            n = _I.unpack_from(data, cell)[0]
            cell_end = cell + 4 + (n if n > 0 else 0)
            if n < -1 or cell_end > row_end:
                raise ValueError("DataRow: invalid value length")
            if k < len(columns) and columns[k] == i:
                value = None if n == -1 else bytes(data[cell + 4:cell_end])
                memo = memos[k]
                if memo is not None and value is not None and value in memo:
                    got = memo[value]
                else:
                    got = rewrites[k](value)
                if got is not None and not isinstance(got, bytes):
                    raise TypeError("a cell rewrite must return bytes or None")
                if got != value:
                    pieces.append(data[copied:cell])
                    pieces.append(_I.pack(-1) if got is None else _I.pack(len(got)) + got)
                    copied = cell_end
                k += 1
            cell = cell_end
        if pieces:
            pieces.append(data[copied:row_end])
            body = b"".join(pieces)
            out.append(b"D" + _I.pack(len(body) + 6) + data[pos + 5:pos + 7] + body)
        else:
            out.append(data[pos:row_end])
        pos = row_end
    return b"".join(out)


try:
    from protocols.postgres._rows import rewrite_rows as _c_rewrite_rows
    from protocols.postgres._rows import row_run_end as _c_row_run_end
except ImportError:  # built without a C compiler: the reference implementation
    ACCELERATED = False
    row_run_end = py_row_run_end
    _rewrite_rows = py_rewrite_rows
else:
    ACCELERATED = True
    row_run_end = _c_row_run_end
    _rewrite_rows = _c_rewrite_rows


def rewrite_rows(data: bytes, start: int, end: int, plan: RowPlan) -> bytes:
    """``data[start:end]`` (whole DataRows) with the planned cells rewritten."""
    try:
        return _rewrite_rows(data, start, end, plan.columns, plan.rewrites, plan.memos,
                             plan.specs)
    except ValueError as exc:
        raise ProtocolViolation(str(exc)) from None
