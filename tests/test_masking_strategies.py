"""Masking strategies: the masked value keeps the shape an agent needs, never the original,
and every masked cell still decodes in a real driver (psycopg's loaders, text and binary)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import Format

from policies.decision import Column
from policies.masking import STRATEGIES, Strategy, cell_rewrite
from tests.conftest import PgTarget

KEY = b"k" * 32


def column(type_oid: int, fmt: int = 0) -> Column:
    return Column(0, "c", 0, 0, type_oid, -1, -1, fmt)


@pytest.mark.parametrize(("strategy", "value", "masked"), [
    (Strategy("redact"), "jane@example.com", "****"),
    (Strategy("redact", token="[hidden]"), "x", "[hidden]"),
    (Strategy("partial", keep_last=4), "4242-4242-4242-4242", "****-****-****-4242"),
    (Strategy("partial", keep_last=4), "4242424242424242", "************4242"),
    (Strategy("partial", keep_first=1, keep_last=2), "Jane Doe", "J*** *oe"),
    (Strategy("partial", keep_last=4), "123", "***"),      # short values are masked whole
    (Strategy("email"), "jane.doe@example.com", "j***@example.com"),
    (Strategy("email"), "not an email", "****"),
    (Strategy("null"), "anything", None),
])
def test_text_strategies(strategy: Strategy, value: str, masked: str | None) -> None:
    assert strategy.mask_text(value) == masked


def test_hash_is_keyed_deterministic_and_not_a_plain_digest() -> None:
    import hashlib

    h = Strategy("hash", key=KEY)
    a, b = h.mask_text("jane@example.com"), h.mask_text("jane@example.com")
    assert a == b and a is not None and len(a) == 32
    assert h.mask_text("john@example.com") != a
    assert Strategy("hash", key=b"other").mask_text("jane@example.com") != a
    assert a not in hashlib.sha256(b"jane@example.com").hexdigest()
    assert a not in hashlib.md5(b"jane@example.com").hexdigest()


def test_fake_keeps_the_shape_and_changes_the_characters() -> None:
    f = Strategy("fake", key=KEY)
    for value in ("078-05-1120", "Jane Doe", "+1 (555) 010-9999", "AB12 cd34"):
        out = f.mask_text(value)
        assert out is not None and len(out) == len(value) and out != value
        for o, v in zip(out, value, strict=True):
            assert o.isdigit() == v.isdigit()
            assert o.isupper() == v.isupper()
            if not v.isalnum():
                assert o == v
        assert f.mask_text(value) == out  # deterministic


@pytest.fixture(scope="module")
def loaders(pg: PgTarget) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(pg.dsn())
    yield conn
    conn.close()


# (type name, oid, a real value as the server sends it in text)
TYPES = [
    ("text", 25, "jane@example.com"), ("varchar", 1043, "jane@example.com"),
    ("bpchar", 1042, "078-05-1120"), ("int4", 23, "424242"), ("int8", 20, "4242424242424242"),
    ("int2", 21, "42"), ("numeric", 1700, "4242.42"), ("float8", 701, "42.5"),
    ("float4", 700, "42.5"), ("bool", 16, "t"), ("date", 1082, "1990-04-01"),
    ("timestamp", 1114, "1990-04-01 10:00:00"), ("timestamptz", 1184, "1990-04-01 10:00:00+00"),
    ("uuid", 2950, "3f0a5f3e-1111-4222-8333-944455556666"),
    ("json", 114, '{"email": "jane@example.com"}'),
    ("jsonb", 3802, '{"email": "jane@example.com"}'), ("bytea", 17, "\\x6a616e65"),
    ("inet", 869, "10.0.0.1"),
]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("name", "oid", "value"), TYPES, ids=[t[0] for t in TYPES])
def test_masked_cells_decode_in_the_driver(loaders: psycopg.Connection[Any], name: str,
                                           oid: int, value: str, strategy: str) -> None:
    strat = Strategy(strategy, key=KEY, keep_last=2)  # type: ignore[arg-type]
    with loaders.cursor(binary=True) as cur:
        cur.execute(f"SELECT %s::{name}", (value,), binary=False)
        text_cell = value.encode()
        cur.execute(f"SELECT %s::text::{name}", (value,), binary=True)
        binary_cell = cur.pgresult.get_value(0, 0) if cur.pgresult else None
    assert binary_cell is not None
    for fmt, cell in ((0, text_cell), (1, binary_cell)):
        out = cell_rewrite(strat, column(oid, fmt))(cell)
        if strategy == "null":
            assert out is None
            continue
        if out is None:
            continue  # NULL is always decodable
        assert out != cell, (name, fmt, strategy)
        loader_class = loaders.adapters.get_loader(oid, Format(fmt))
        assert loader_class is not None
        loader_class(oid, loaders).load(out)  # raises if the driver cannot decode it
    assert cell_rewrite(strat, column(oid))(None) is None
