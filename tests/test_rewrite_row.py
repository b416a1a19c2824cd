"""The DataRow rewrite: only planned cells change, the rest are the server's bytes, a run of
rows is rewritten in one call, and a malformed row is a protocol violation, never a crash or a
misread. The C walk and the Python reference must give the same bytes for any input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.postgres import messages as m
from protocols.postgres import rows
from protocols.postgres.framing import VALID_BACKEND, Framer

Walk = Callable[..., bytes]
WALKS: list[Walk] = [rows.py_rewrite_rows]
if rows.ACCELERATED:
    from protocols.postgres import _rows  # type: ignore[attr-defined]
    WALKS.append(_rows.rewrite_rows)


def test_the_c_walk_was_built() -> None:
    # The install compiles it wherever a C compiler exists (it does on every supported
    # machine); without it masked bulk reads run at a fraction of the speed.
    assert rows.ACCELERATED


def rewrite(walk: Walk, raw: bytes, plan: dict[int, rows.Rewrite]) -> bytes:
    p = rows.RowPlan(plan)
    try:
        return walk(raw, 0, len(raw), p.columns, p.rewrites, p.memos, p.specs)
    except ValueError as exc:
        raise m.ProtocolViolation(str(exc)) from None


def row(*cells: bytes | None) -> bytes:
    return m.DataRow(tuple(cells)).encode()


@pytest.mark.parametrize("walk", WALKS)
def test_planned_cells_change_and_the_rest_stay(walk: Walk) -> None:
    raw = row(b"1", None, b"jane@example.com", b"x")
    out = rewrite(walk, raw, {2: lambda c: b"****", 1: lambda c: b"was null"})
    assert m.decode_data_row(out[5:]) == (b"1", b"was null", b"****", b"x")
    assert rewrite(walk, raw, {0: lambda c: None}) == row(None, None, b"jane@example.com", b"x")
    assert rewrite(walk, raw, {3: lambda c: c}) == raw


@pytest.mark.parametrize("walk", WALKS)
def test_plan_beyond_the_row_is_ignored(walk: Walk) -> None:
    raw = row(b"a")
    assert rewrite(walk, raw, {0: lambda c: b"b", 5: lambda c: b"z"}) == row(b"b")


@pytest.mark.parametrize("walk", WALKS)
def test_a_run_of_rows_is_rewritten_row_by_row(walk: Walk) -> None:
    run = row(b"1", b"a@x.io") + row(b"2", None) + row(b"3", b"b@y.io", b"extra")
    out = rewrite(walk, run, {1: lambda c: None if c is None else b"*" * len(c)})
    assert out == row(b"1", b"******") + row(b"2", None) + row(b"3", b"******", b"extra")


@pytest.mark.parametrize("walk", WALKS)
def test_memo_answers_repeated_values_without_a_call(walk: Walk) -> None:
    calls: list[bytes | None] = []

    class Cell:
        def __init__(self) -> None:
            self.memo: dict[bytes, bytes | None] = {b"seen": b"MEMO"}

        def __call__(self, c: bytes | None) -> bytes | None:
            calls.append(c)
            return b"CALL"

    out = rewrite(walk, row(b"seen") + row(b"new") + row(None), {0: Cell()})
    assert out == row(b"MEMO") + row(b"CALL") + row(b"CALL")
    assert calls == [b"new", None]


@pytest.mark.parametrize("walk", WALKS)
@pytest.mark.parametrize("raw", [
    b"D\x00\x00\x00\x06\x00",                                   # truncated header
    b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x09ab",              # value longer than the row
    b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xfeab",              # negative length below -1
    b"D\x00\x00\x00\x03\x00\x01",                                # length below the minimum
    b"T\x00\x00\x00\x06\x00\x00",                                # not a DataRow
])
def test_malformed_rows_are_protocol_violations(walk: Walk, raw: bytes) -> None:
    with pytest.raises(m.ProtocolViolation):
        rewrite(walk, raw, {0: lambda c: b"x"})


@pytest.mark.parametrize("walk", WALKS)
def test_a_rewrite_returning_something_else_is_an_error(walk: Walk) -> None:
    with pytest.raises(TypeError):
        rewrite(walk, row(b"a"), {0: lambda c: "text"})  # type: ignore[dict-item,return-value]


cells = st.one_of(st.none(), st.binary(max_size=12))
row_lists = st.lists(st.lists(cells, max_size=5), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(row_lists, st.sets(st.integers(0, 5), max_size=4), st.binary(max_size=6),
       st.integers(0, 40))
def test_c_and_python_walks_agree(data: list[list[bytes | None]], planned: set[int],
                                  new: bytes, cut: int) -> None:
    run = b"".join(row(*r) for r in data)
    def make(i: int) -> rows.Rewrite:
        return lambda c: None if c == new else new + bytes([i])

    plan: dict[int, rows.Rewrite] = {i: make(i) for i in planned}
    results = []
    for walk in WALKS:
        try:
            results.append(rewrite(walk, run, plan))
        except m.ProtocolViolation as exc:
            results.append(str(exc).encode())
    assert all(r == results[0] for r in results)
    # A run cut short anywhere is refused alike by both.
    broken = run[:max(len(run) - 1 - cut, 0)]
    errors = []
    for walk in WALKS:
        try:
            errors.append(rewrite(walk, broken, plan))
        except m.ProtocolViolation as exc:
            errors.append(str(exc).encode())
    assert all(e == errors[0] for e in errors)


def test_framer_hands_over_runs_of_whole_rows() -> None:
    fr = Framer(VALID_BACKEND, 1 << 20, "backend")
    fr.set_watch(b"DC")
    fr.row_runs = True
    r1, r2, r3 = row(b"1"), row(b"22"), row(b"333")
    done = m.CommandComplete("SELECT 3").encode()
    data = r1 + r2 + r3[:4]
    frames = fr.scan(data)
    assert [(f.code, f.start, f.end) for f in frames] == [(0x44, 0, len(r1 + r2))]
    assert fr.forwardable == len(r1 + r2)
    frames = fr.scan(r3[4:] + r1 + done)
    assert [(chr(f.code), f.start) for f in frames] == [("D", -1), ("D", len(r3) - 4),
                                                        ("C", len(r3) - 4 + len(r1))]
    assert frames[0].buf == r3


ascii_values = st.text(alphabet=st.characters(max_codepoint=127), max_size=40)
any_values = st.text(max_size=20)


@pytest.mark.skipif(not rows.ACCELERATED, reason="the byte specs exist in the C walk only")
@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(ascii_values, any_values, st.none()), min_size=1, max_size=8),
       st.sampled_from(["partial", "email", "redact"]), st.integers(0, 6), st.integers(0, 6))
def test_byte_specs_give_what_the_strategy_gives(values: list[str | None], name: str,
                                                 first: int, last: int) -> None:
    """The C walk masks ASCII values itself; the result must be the strategy's, byte for
    byte, and a value it cannot handle (not ASCII) still gets the strategy's answer."""
    from policies.decision import Column
    from policies.masking import Strategy, cell_rewrite

    strategy = Strategy(name, keep_first=first, keep_last=last)  # type: ignore[arg-type]
    column = Column(0, "c", 0, 0, 25, -1, -1, 0)
    fast = cell_rewrite(strategy, column)
    assert getattr(fast, "spec", None) is not None
    run = b"".join(row(None if v is None else v.encode()) for v in values)
    got = rewrite(_rows.rewrite_rows, run, {0: fast})
    want = b"".join(row(None if v is None else strategy.mask_text(v).encode())  # type: ignore[union-attr]
                    for v in values)
    assert got == want
