"""The MySQL text-row walk: the C walk gives exactly the bytes of the Python reference, which
gives exactly what re-encoding every row cell by cell gives; both stop where a row run ends."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.masking import Strategy
from policies.mysql_masking import MySQLColumn, binary_cell_rewrite, text_cell_rewrite
from protocols.mysql.binary import encode_binary_row, rewrite_binary_row, string_value
from protocols.mysql.messages import encode_text_row, rewrite_text_row
from protocols.mysql.packets import encode
from protocols.mysql.rows import (
    RowPlan,
    c_rewrite_binary_rows,
    c_rewrite_text_rows,
    py_rewrite_binary_rows,
    py_rewrite_text_rows,
)
from protocols.mysql.types import DATETIME, DOUBLE, LONG, VAR_STRING

WALKS = [py_rewrite_text_rows] + ([c_rewrite_text_rows] if c_rewrite_text_rows else [])
STRATEGIES = [Strategy("partial", keep_last=4), Strategy("email"), Strategy("redact"),
              Strategy("hash", key=b"k" * 16), Strategy("null")]

cells = st.one_of(st.none(), st.binary(max_size=40),
                  st.text(alphabet="ab1@.-é", max_size=30).map(str.encode),
                  st.binary(min_size=251, max_size=300))


def test_the_c_walk_was_built() -> None:
    """setuptools builds it as an optional extension; the suite notices when it did not."""
    assert c_rewrite_text_rows is not None


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(cells, min_size=3, max_size=3), min_size=1, max_size=6),
       strategy=st.sampled_from(STRATEGIES), length=st.sampled_from([0, 8, 80, 400]),
       planned=st.sampled_from([(0,), (1,), (0, 2), (2,)]), seq=st.integers(0, 255),
       deprecate=st.booleans())
def test_walks_agree_with_the_cell_by_cell_rewrite(
        rows: list[list[bytes | None]], strategy: Strategy, length: int,
        planned: tuple[int, ...], seq: int, deprecate: bool) -> None:
    col = MySQLColumn(0, "db", "t", "t", "c", "c", VAR_STRING, charset=45, length=length)
    plan = {i: text_cell_rewrite(strategy, col) for i in planned}
    payloads = [encode_text_row(tuple(r)) for r in rows]
    data = b"".join(encode(p, (seq + i) & 0xFF) for i, p in enumerate(payloads))
    end = b"\xfe\x00\x00\x02\x00" + (b"\x00\x00" if deprecate else b"")
    terminator = encode(end, (seq + len(rows)) & 0xFF)
    expected = b"".join(encode(rewrite_text_row(p, sorted(plan.items())), (seq + i) & 0xFF)
                        for i, p in enumerate(payloads))
    for walk in WALKS:
        fresh = RowPlan({i: text_cell_rewrite(strategy, col) for i in planned})
        out, stop, next_seq = walk(data + terminator, 0, seq, fresh.columns, fresh.rewrites,
                                   fresh.memos, fresh.specs, fresh.limits, deprecate)
        assert out == expected, walk
        assert stop == len(data) and next_seq == (seq + len(rows)) & 0xFF


@pytest.mark.parametrize("walk", WALKS)
def test_a_walk_stops_at_an_unexpected_sequence_id_or_a_partial_packet(walk: Any) -> None:
    col = MySQLColumn(0, "db", "t", "t", "c", "c", VAR_STRING, length=80)
    plan = RowPlan({0: text_cell_rewrite(Strategy("redact"), col)})
    row = encode(encode_text_row((b"secret",)), 5)
    args = (plan.columns, plan.rewrites, plan.memos, plan.specs, plan.limits, False)
    assert walk(row + row, 0, 5, *args)[1:] == (len(row), 6)        # the second is seq 5 again
    assert walk(row[:-1], 0, 5, *args) == (b"", 0, 5)               # incomplete: left alone
    with pytest.raises(ValueError):
        walk(encode(b"\x05ab", 5), 0, 5, *args)                     # a value past the end


BINARY_WALKS = [py_rewrite_binary_rows] + ([c_rewrite_binary_rows] if c_rewrite_binary_rows
                                           else [])
_TYPES = [LONG, VAR_STRING, DATETIME, DOUBLE, VAR_STRING]


def _binary_cell(type_: int, draw: st.DrawFn) -> bytes | None:
    if draw(st.booleans()):
        return None
    if type_ == LONG:
        return draw(st.binary(min_size=4, max_size=4))
    if type_ == DOUBLE:
        return draw(st.binary(min_size=8, max_size=8))
    if type_ == DATETIME:
        return bytes([7]) + draw(st.binary(min_size=7, max_size=7))
    return string_value(draw(st.binary(max_size=300)))


@st.composite
def binary_rows(draw: st.DrawFn) -> list[tuple[bytes | None, ...]]:
    return [tuple(_binary_cell(t, draw) for t in _TYPES)
            for _ in range(draw(st.integers(1, 5)))]


@settings(max_examples=200, deadline=None)
@given(rows=binary_rows(), strategy=st.sampled_from(STRATEGIES),
       planned=st.sampled_from([(1,), (0, 1), (2, 4), (1, 3, 4)]), seq=st.integers(0, 255))
def test_binary_walks_agree_with_the_cell_by_cell_rewrite(
        rows: list[tuple[bytes | None, ...]], strategy: Strategy, planned: tuple[int, ...],
        seq: int) -> None:
    cols = [MySQLColumn(i, "db", "t", "t", f"c{i}", f"c{i}", t, length=80)
            for i, t in enumerate(_TYPES)]

    def plan() -> dict[int, Any]:
        return {i: binary_cell_rewrite(strategy, cols[i]) for i in planned}

    payloads = [encode_binary_row(r) for r in rows]
    data = b"".join(encode(p, (seq + i) & 0xFF) for i, p in enumerate(payloads))
    expected = b"".join(encode(rewrite_binary_row(p, _TYPES, plan()), (seq + i) & 0xFF)
                        for i, p in enumerate(payloads))
    end = encode(b"\xfe\x00\x00\x02\x00", (seq + len(rows)) & 0xFF)
    for walk in BINARY_WALKS:
        rp = RowPlan(plan())
        out, stop, next_seq = walk(data + end, 0, seq, bytes(_TYPES), rp.columns, rp.rewrites,
                                   rp.memos, rp.specs, rp.limits, False)
        assert out == expected, walk
        assert (stop, next_seq) == (len(data), (seq + len(rows)) & 0xFF)
