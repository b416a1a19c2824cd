"""The DataRow rewrite: only planned cells change, the rest are the server's bytes, and a
malformed row is a protocol violation, never a crash or a misread."""

from __future__ import annotations

import pytest

from protocols.postgres import messages as m
from proxy.relay import rewrite_row


def row(*cells: bytes | None) -> bytes:
    return m.DataRow(tuple(cells)).encode()


def test_planned_cells_change_and_the_rest_stay() -> None:
    raw = row(b"1", None, b"jane@example.com", b"x")
    out = rewrite_row(raw, {2: lambda c: b"****", 1: lambda c: b"was null"})
    assert m.decode_data_row(out[5:]) == (b"1", b"was null", b"****", b"x")
    assert rewrite_row(raw, {0: lambda c: None})[5:] == row(None, None, b"jane@example.com",
                                                            b"x")[5:]
    same = rewrite_row(raw, {3: lambda c: c})
    assert same == raw


def test_plan_beyond_the_row_is_ignored() -> None:
    raw = row(b"a")
    assert m.decode_data_row(rewrite_row(raw, {0: lambda c: b"b", 5: lambda c: b"z"})[5:]) \
        == (b"b",)


@pytest.mark.parametrize("raw", [
    b"D\x00\x00\x00\x06\x00",                                   # truncated header
    b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x09ab",              # value longer than the row
    b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xfeab",              # negative length below -1
])
def test_malformed_rows_are_protocol_violations(raw: bytes) -> None:
    with pytest.raises(m.ProtocolViolation):
        rewrite_row(raw, {0: lambda c: b"x"})
